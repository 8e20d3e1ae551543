//! `control-plane ci …`: a client for CI pipelines over the JSON API.
//!
//! It needs no tool database and no settings of the control plane: only the
//! instance's URL and an API token (`MH_URL`, `MH_TOKEN`), so the same binary
//! that serves the app runs in any pipeline image.
//!
//! Exit codes are the contract with the pipeline:
//! - 0: done (imported or nothing new; run requested; run succeeded);
//! - 1: refused on the merits (import conflicts; the run failed, partially
//!   failed, or was denied, invalidated or cancelled);
//! - 2: could not do it (bad token, unknown project, network, timeout, any
//!   other API error); `error: <code>: <message>` on standard error.
//!
//! Values a script captures (the newest version of a folder, a run id) go
//! to standard output alone; reports for people go to standard error. With
//! `--json`, standard output carries JSON instead.

mod client;
mod request;
mod sync;
mod wait;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

pub use client::Api;

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Import a folder of migration files into a project (all or nothing).
    ///
    /// Prints the newest version of the folder alone on standard output (for
    /// `ci request --to`) and the report on standard error. Exit 0: created,
    /// or nothing new; 1: some versions differ from the stored migrations
    /// (each is named with its files) and nothing was imported; 2: any other
    /// error.
    Sync(SyncArgs),
    /// Request a run of a DB set up (or down) to a version.
    ///
    /// Prints the run's id alone on standard output and its page on standard
    /// error. Exit 0: requested; 2: refused (e.g. `nothing_to_do`) or error.
    Request(RequestArgs),
    /// Follow a run until it finishes, printing each target's result once.
    ///
    /// Exit 0: the run succeeded; 1: it failed, partially failed, or was
    /// denied, invalidated or cancelled; 2: timeout or error.
    Wait(WaitArgs),
}

/// Where the instance is and who is asking.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The instance's public URL, e.g. https://migrate.example.com.
    #[arg(long, env = "MH_URL")]
    pub url: Option<String>,
    /// An API token (`control-plane token create`, or the Tokens page); sent
    /// as a bearer token and never printed. Prefer the environment variable.
    #[arg(long, env = "MH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The project's slug.
    #[arg(long)]
    pub project: String,
    /// Accept versions older than ones already applied somewhere (they are
    /// refused with `out_of_order` otherwise, on servers that check it).
    #[arg(long)]
    pub allow_out_of_order: bool,
    /// Print one JSON object on standard output instead of the version.
    #[arg(long)]
    pub json: bool,
    /// The folder of migration files (Flyway, golang-migrate, dbmate, diesel
    /// or goose layout), read recursively.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The project's slug.
    #[arg(long)]
    pub project: String,
    /// The DB set's name, e.g. `orders`.
    #[arg(long)]
    pub db_set: String,
    /// Up: apply every version up to this one; with --down: roll back every
    /// version above it.
    #[arg(long)]
    pub to: String,
    /// Roll back instead of apply.
    #[arg(long)]
    pub down: bool,
    /// Shown to approvers, e.g. the commit and pipeline that asked.
    #[arg(long)]
    pub note: Option<String>,
    /// Print the run as one JSON object `{id, url, state, …}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The run's id (what `ci request` printed).
    pub run_id: uuid::Uuid,
    /// Give up (exit 2) after this long, e.g. 90s, 30m, 2h.
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time between two looks at the run, e.g. 2s, 500ms.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Execute the run once it is approved (the requester's token may).
    #[arg(long)]
    pub execute: bool,
    /// Print one JSON object per line: an event per finished target, then a
    /// summary.
    #[arg(long)]
    pub json: bool,
}

/// Why a command could not do its job: the API's error code (or one of
/// ours: `configuration`, `unreachable`, `unknown_db_set`, `timeout`, …)
/// and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            code: code.into(),
            message: message.into(),
        }
    }

    fn json(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message}})
    }
}

/// What a command ends with, in the exit codes of the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Refused,
}

/// Runs one `ci` command to its exit code.
pub fn main(command: CiCommand) -> ExitCode {
    let json = match &command {
        CiCommand::Sync(a) => a.json,
        CiCommand::Request(a) => a.json,
        CiCommand::Wait(a) => a.json,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&Failure::new("internal", e.to_string()), json),
    };
    match runtime.block_on(run(command)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Refused) => ExitCode::from(1),
        Err(failure) => fail(&failure, json),
    }
}

async fn run(command: CiCommand) -> Result<Outcome, Failure> {
    match command {
        CiCommand::Sync(args) => sync::run(&connect(&args.connection)?, &args).await,
        CiCommand::Request(args) => request::run(&connect(&args.connection)?, &args).await,
        CiCommand::Wait(args) => wait::run(&connect(&args.connection)?, &args).await,
    }
}

fn connect(connection: &Connection) -> Result<Api, Failure> {
    let missing = |variable: &str, flag: &str| {
        Failure::new(
            "configuration",
            format!("{variable} is not set (set it in the environment, or pass {flag})"),
        )
    };
    let url = (connection.url.as_deref()).ok_or_else(|| missing("MH_URL", "--url"))?;
    let token = (connection.token.as_deref()).ok_or_else(|| missing("MH_TOKEN", "--token"))?;
    Api::new(url, token)
}

/// Exit 2 with the error on standard error (and as JSON on standard output
/// with `--json`, so a parser of the output sees it too).
fn fail(failure: &Failure, json: bool) -> ExitCode {
    if json {
        println!("{}", failure.json());
    }
    eprintln!("error: {}: {}", failure.code, failure.message);
    ExitCode::from(2)
}

/// `90s`, `30m`, `2h`, `500ms`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 90s, 30m or 2h"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        for bad in ["", "m", "1d", "-1s", "0s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
