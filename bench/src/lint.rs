//! SQL review speed: `control-plane lint` over the whole kratos history,
//! for each engine, in this process (no server, no database). Reports the
//! findings per analyzer as a sanity check of what the analyzers say about a
//! real history.

use std::{collections::BTreeMap, time::Instant};

use common::domain::Engine;
use control_plane::lint::{Rating, lint};
use serde_json::json;

use crate::{
    Config,
    report::{Outcome, Row, median, round},
};

/// Well under a second per engine, in a release build.
pub const BAR_MS: f64 = 500.0;
const REPEAT: usize = 5;

pub async fn run(cfg: &Config) -> anyhow::Result<Outcome> {
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    let mut notes = Vec::new();
    for (engine, sub) in [(Engine::Postgres, "postgres"), (Engine::Mysql, "mysql")] {
        let dir = cfg.workloads.join("kratos").join(sub);
        let rating = Rating::catalogue();
        let mut times = Vec::new();
        let mut findings = Vec::new();
        for _ in 0..REPEAT {
            let dir = dir.clone();
            let rating = rating.clone();
            let (elapsed, found) = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let found = lint(engine, &rating, &[dir]);
                (started.elapsed().as_secs_f64() * 1000.0, found)
            })
            .await?;
            findings = found?;
            times.push(elapsed);
        }
        let ms = median(&times);
        let mut per_code: BTreeMap<String, usize> = BTreeMap::new();
        for f in &findings {
            *per_code.entry(f.finding.code.clone()).or_default() += 1;
        }
        let files: std::collections::BTreeSet<&str> =
            findings.iter().map(|f| f.file.as_str()).collect();
        rows.push(
            Row::new("lint", format!("kratos up scripts, {}", engine.as_str()))
                .hub(format!(
                    "{:.0} ms ({} findings in {} files)",
                    ms,
                    findings.len(),
                    files.len()
                ))
                .bar(format!("< {BAR_MS:.0} ms"), ms < BAR_MS),
        );
        notes.push(format!(
            "kratos/{sub}, findings per analyzer: {}",
            per_code
                .iter()
                .map(|(c, n)| format!("`{c}` {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        details.insert(
            engine.as_str().into(),
            json!({
                "median_ms": round(ms),
                "samples_ms": times.iter().map(|t| round(*t)).collect::<Vec<_>>(),
                "findings": findings.len(),
                "per_analyzer": per_code,
            }),
        );
    }
    Ok(Outcome {
        name: "lint",
        rows,
        details: json!(details),
        notes,
    })
}
