//! Results: percentiles, the printed table, the JSON file and the blocks of
//! `docs/Benchmarks.md`.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub benchmark: String,
    pub measurement: String,
    /// What migrate-hub did.
    pub hub: String,
    /// What it is compared against (floor, dbmate), or `—`.
    pub compared: String,
    pub bar: String,
    /// `None` when the line has no bar of its own.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(benchmark: &str, measurement: impl Into<String>) -> Row {
        Row {
            benchmark: benchmark.into(),
            measurement: measurement.into(),
            hub: String::new(),
            compared: "—".into(),
            bar: "—".into(),
            met: None,
        }
    }

    pub fn hub(mut self, hub: impl Into<String>) -> Row {
        self.hub = hub.into();
        self
    }

    pub fn compared(mut self, compared: impl Into<String>) -> Row {
        self.compared = compared.into();
        self
    }

    pub fn bar(mut self, bar: impl Into<String>, met: bool) -> Row {
        self.bar = bar.into();
        self.met = Some(met);
        self
    }
}

/// What one benchmark produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: &'static str,
    pub rows: Vec<Row>,
    pub details: Value,
    /// Findings worth reading next to the numbers.
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn bars_met(&self) -> bool {
        self.rows.iter().all(|r| r.met != Some(false))
    }
}

/// p50, p99 and more over samples in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| -> f64 {
            if s.is_empty() {
                return f64::NAN;
            }
            // Nearest rank: the smallest sample with at least q of all at or below it.
            let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1]
        };
        Stats {
            samples: s.len(),
            p50_ms: round(pick(0.50)),
            p90_ms: round(pick(0.90)),
            p99_ms: round(pick(0.99)),
            max_ms: round(s.last().copied().unwrap_or(f64::NAN)),
            mean_ms: round(if s.is_empty() {
                f64::NAN
            } else {
                s.iter().sum::<f64>() / s.len() as f64
            }),
        }
    }
}

/// CPU seconds the whole machine spent busy (all but idle and iowait),
/// from `/proc/stat`: the rest of the load (PostgreSQL, other processes).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Some(busy / 100.0)
}

/// The machine's busy CPU seconds since `before` ([`machine_busy_seconds`])
/// was read.
pub fn machine_busy_since(before: Option<f64>) -> Option<f64> {
    machine_busy_seconds()
        .zip(before)
        .map(|(after, before)| after - before)
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn secs(x: f64) -> String {
    format!("{x:.2} s")
}

pub fn ratio(hub: f64, floor: f64) -> f64 {
    round(hub / floor)
}

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub kernel: String,
    pub postgresql: String,
    pub mariadb: String,
    /// 1-minute load average when the bench started (the machine may be shared).
    pub load_at_start: f64,
}

impl Machine {
    pub fn read(postgresql: String, mariadb: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let load_at_start = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(f64::NAN);
        Machine {
            cpu,
            cores,
            ram_gib: round(ram_kib / 1024.0 / 1024.0),
            kernel,
            postgresql,
            mariadb,
            load_at_start,
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} ({} cores), {:.1} GiB RAM, Linux {}, PostgreSQL {}, MariaDB {}; load average {:.2} at start",
            self.cpu,
            self.cores,
            self.ram_gib,
            self.kernel,
            self.postgresql,
            self.mariadb,
            self.load_at_start
        )
    }
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "",
    }
}

/// The table as printed on the terminal.
pub fn print_table(outcomes: &[Outcome]) {
    let header = [
        "benchmark",
        "measurement",
        "migrate-hub",
        "compared",
        "bar",
        "met",
    ];
    let mut lines: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for o in outcomes {
        for r in &o.rows {
            lines.push([
                r.benchmark.clone(),
                r.measurement.clone(),
                r.hub.clone(),
                r.compared.clone(),
                r.bar.clone(),
                met(r.met).replace('*', ""),
            ]);
        }
    }
    let mut widths = [0usize; 6];
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
        if i == 0 {
            println!(
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    for o in outcomes {
        for n in &o.notes {
            println!("note ({}): {n}", o.name);
        }
    }
}

pub fn json_document(date: &str, machine: &Machine, outcomes: &[Outcome]) -> Value {
    let mut results = serde_json::Map::new();
    for o in outcomes {
        results.insert(
            o.name.to_owned(),
            json!({
                "bars_met": o.bars_met(),
                "rows": o.rows,
                "details": o.details,
                "notes": o.notes,
            }),
        );
    }
    json!({
        "date": date,
        "machine": machine,
        "bars_met": outcomes.iter().all(Outcome::bars_met),
        "results": results,
    })
}

fn block(date: &str, machine: &Machine, outcome: &Outcome) -> String {
    let mut s = format!(
        "Measured {date} on {}.\n\n| measurement | migrate-hub | compared against | bar | met |\n|---|---|---|---|---|\n",
        machine.summary()
    );
    for r in &outcome.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.measurement,
            r.hub,
            r.compared,
            r.bar,
            met(r.met)
        ));
    }
    for n in &outcome.notes {
        s.push_str(&format!("\n- {n}"));
    }
    if !outcome.notes.is_empty() {
        s.push('\n');
    }
    s
}

/// Replaces the generated block of each benchmark that ran in `doc` (the
/// text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`);
/// a benchmark without a block gets one appended. Everything else is kept.
pub fn update_doc(doc: &str, date: &str, machine: &Machine, outcomes: &[Outcome]) -> String {
    let mut doc = doc.to_owned();
    for o in outcomes {
        let begin = format!("<!-- bench:{}:begin -->", o.name);
        let end = format!("<!-- bench:{}:end -->", o.name);
        let body = block(date, machine, o);
        match (doc.find(&begin), doc.find(&end)) {
            (Some(b), Some(e)) if e > b => {
                doc.replace_range(b + begin.len()..e, &format!("\n{body}"));
            }
            _ => {
                if !doc.ends_with('\n') {
                    doc.push('\n');
                }
                doc.push_str(&format!("\n### {}\n\n{begin}\n{body}{end}\n", o.name));
            }
        }
    }
    doc
}

pub fn write_doc(
    path: &Path,
    date: &str,
    machine: &Machine,
    outcomes: &[Outcome],
) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(path, update_doc(&current, date, machine, outcomes))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&samples);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        let s = Stats::of(&[3.0]);
        assert_eq!((s.p50_ms, s.p99_ms), (3.0, 3.0));
    }

    #[test]
    fn doc_blocks_are_replaced_in_place_and_the_rest_kept() {
        let machine = Machine {
            cpu: "cpu".into(),
            cores: 2,
            ram_gib: 1.0,
            kernel: "k".into(),
            postgresql: "15".into(),
            mariadb: "10.11".into(),
            load_at_start: 0.5,
        };
        let outcome = Outcome {
            name: "queue",
            rows: vec![
                Row::new("queue", "idle p50")
                    .hub("3 ms")
                    .bar("< 50 ms", true),
            ],
            details: Value::Null,
            notes: vec![],
        };
        let doc =
            "# B\n\nintro\n\n<!-- bench:queue:begin -->\nold\n<!-- bench:queue:end -->\n\nafter\n";
        let new = update_doc(doc, "2026-11-25", &machine, std::slice::from_ref(&outcome));
        assert!(new.contains("intro") && new.contains("after"));
        assert!(!new.contains("old"));
        assert!(new.contains("| idle p50 | 3 ms | — | < 50 ms | yes |"));
        let appended = update_doc("# B\n", "d", &machine, &[outcome]);
        assert!(appended.contains("<!-- bench:queue:begin -->"));
    }
}
