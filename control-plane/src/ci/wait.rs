//! `ci wait`: follow a run to its end, optionally executing it once approved.

use std::collections::{BTreeMap, HashSet};

use common::domain::{RunState, TargetState};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Api, Failure, Outcome, WaitArgs};

/// Where the run is, for the messages and the summary.
struct Follower<'a> {
    args: &'a WaitArgs,
    run_id: String,
    page: String,
    /// Targets whose result was printed (by target id).
    reported: HashSet<String>,
    last_state: Option<String>,
    /// The control plane did not answer last time: said once, not per poll.
    unanswered: bool,
}

impl Follower<'_> {
    fn emit(&self, event: Value, text: impl FnOnce() -> String) {
        if self.args.json {
            println!("{event}");
        } else {
            println!("{}", text());
        }
    }

    fn state_changed(&mut self, run: &Value) {
        let state = run["state"].as_str().unwrap_or_default().to_owned();
        if self.last_state.as_deref() == Some(&state) {
            return;
        }
        let reason = run["state_reason"].as_str();
        self.emit(
            json!({"event": "state", "run_id": self.run_id, "state": state, "state_reason": reason}),
            || match reason {
                Some(r) if !r.is_empty() => format!("run {}: {} ({r})", self.run_id, words(&state)),
                _ => format!("run {}: {}", self.run_id, words(&state)),
            },
        );
        self.last_state = Some(state);
    }

    /// Prints each finished target once.
    fn targets_finished(&mut self, run: &Value) {
        for target in run["targets"].as_array().into_iter().flatten() {
            let id = target["target_id"].as_str().unwrap_or_default().to_owned();
            let state = target["state"].as_str().unwrap_or_default();
            let finished = state
                .parse::<TargetState>()
                .is_ok_and(TargetState::is_final);
            if !finished || self.reported.contains(&id) {
                continue;
            }
            let name = target["target_name"].as_str().unwrap_or(&id);
            let error = target["error"].as_str().filter(|e| !e.is_empty());
            self.emit(
                json!({
                    "event": "target",
                    "run_id": self.run_id,
                    "target_id": id,
                    "target": name,
                    "state": state,
                    "duration_ms": target["duration_ms"],
                    "statement": target["statement"],
                    "error": error,
                }),
                || {
                    let mut line = format!("target {name}: {}", words(state));
                    if let Some(ms) = target["duration_ms"].as_i64() {
                        line.push_str(&format!(" in {ms} ms"));
                    }
                    if let Some(error) = error {
                        if let Some(n) = target["statement"].as_i64() {
                            line.push_str(&format!(" at statement {n}"));
                        }
                        line.push_str(&format!(": {error}"));
                    }
                    line
                },
            );
            self.reported.insert(id);
        }
    }

    fn finished(&self, run: &Value, state: RunState) -> Outcome {
        let outcome = if state == RunState::Succeeded {
            Outcome::Done
        } else {
            Outcome::Refused
        };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for target in run["targets"].as_array().into_iter().flatten() {
            *counts
                .entry(target["state"].as_str().unwrap_or("unknown").to_owned())
                .or_default() += 1;
        }
        let reason = run["state_reason"].as_str().filter(|r| !r.is_empty());
        self.emit(
            json!({
                "event": "finished",
                "run_id": self.run_id,
                "url": self.page,
                "state": state,
                "state_reason": reason,
                "targets": counts,
                "exit_code": if outcome == Outcome::Done { 0 } else { 1 },
            }),
            || {
                let counts = counts
                    .iter()
                    .map(|(s, n)| format!("{n} {}", words(s)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut line = format!("run {} {}", self.run_id, words(state.as_str()));
                if let Some(reason) = reason {
                    line.push_str(&format!(" ({reason})"));
                }
                if !counts.is_empty() {
                    line.push_str(&format!(": targets {counts}"));
                }
                format!("{line}\n{}", self.page)
            },
        );
        outcome
    }
}

fn words(state: &str) -> String {
    state.replace('_', " ")
}

pub async fn run(api: &Api, args: &WaitArgs) -> Result<Outcome, Failure> {
    let run_id = args.run_id.to_string();
    let run_url = api.api_url(&["runs", &run_id]);
    let mut follower = Follower {
        args,
        page: api.url(&["runs", &run_id]).to_string(),
        run_id,
        reported: HashSet::new(),
        last_state: None,
        unanswered: false,
    };
    let deadline = Instant::now() + args.timeout;
    let mut executed = false;
    loop {
        match look(api, run_url.clone()).await? {
            // Before the run was seen once, no answer is a wrong URL or a
            // network that does not reach the instance, not a restart.
            Err(failure) if follower.last_state.is_none() => return Err(failure),
            Err(failure) => {
                if !follower.unanswered {
                    eprintln!(
                        "no answer ({}: {}); asking again until the timeout",
                        failure.code, failure.message
                    );
                    follower.unanswered = true;
                }
            }
            Ok(run) => {
                follower.unanswered = false;
                follower.targets_finished(&run);
                let state: RunState = run["state"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| Failure::new("bad_response", format!("the run's answer: {e}")))?;
                if state.is_final() {
                    // The summary says the final state.
                    return Ok(follower.finished(&run, state));
                }
                follower.state_changed(&run);
                if state == RunState::Approved && args.execute && !executed {
                    executed = true;
                    execute(api, &follower).await?;
                    // Look again at once: the run is queued now.
                    continue;
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Failure::new(
                "timeout",
                format!(
                    "run {} is still {} after {}; {}",
                    follower.run_id,
                    words(follower.last_state.as_deref().unwrap_or("unanswered")),
                    humane(args.timeout),
                    follower.page
                ),
            ));
        }
        tokio::time::sleep(args.interval.min(deadline - now)).await;
    }
}

/// The run, or why the control plane could not answer this time (a
/// restart, a proxy's 502, the token's request budget): a long run outlives
/// those. Any other refusal (401, 404 …) ends the wait.
async fn look(api: &Api, url: reqwest::Url) -> Result<Result<Value, Failure>, Failure> {
    match api.send(Method::GET, url, None).await {
        Err(failure) if failure.code == "unreachable" => Ok(Err(failure)),
        Err(failure) => Err(failure),
        Ok(answer) if answer.is_transient() => Ok(Err(answer.failure())),
        Ok(answer) if answer.status.is_success() => Ok(Ok(answer.body)),
        Ok(answer) => Err(answer.failure()),
    }
}

/// Executes the approved run once. The run moving on meanwhile (someone
/// else executed, cancelled or invalidated it) is fine: the next look
/// shows where it went.
async fn execute(api: &Api, follower: &Follower<'_>) -> Result<(), Failure> {
    let url = api.api_url(&["runs", &follower.run_id, "execute"]);
    let answer = api.send(Method::POST, url, Some(&json!({}))).await?;
    if answer.status.is_success() {
        follower.emit(
            json!({"event": "executed", "run_id": follower.run_id}),
            || format!("run {}: executed", follower.run_id),
        );
        return Ok(());
    }
    let failure = answer.failure();
    if matches!(
        failure.code.as_str(),
        "already_executed" | "invalid_state" | "run_invalidated"
    ) {
        return Ok(());
    }
    Err(failure)
}

fn humane(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{} ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
