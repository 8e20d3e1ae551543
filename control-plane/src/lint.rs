//! `control-plane lint`: the SQL review, offline, for pipelines.
//!
//! Runs the same analyzers as the hub ([`common::review`]) on migration
//! folders (any layout the import reads) or single files, without a tool
//! database or a server, rated by the catalogue, an environment's default
//! policy or a policy file, with the waivers the scripts' `-- migrate-hub:allow`
//! directives give. Exit 1 when an error-level finding nobody waived
//! remains, so a pipeline stops before the run is even requested.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, ValueEnum};
use common::{
    domain::{Engine, directives, import},
    review::{
        ANALYZERS, Severity,
        policy::Policy,
        run::{self, Item, Script},
    },
};
use serde_json::json;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The engine whose grammar and rules apply.
    #[arg(long, default_value = "postgres")]
    pub engine: Engine,
    /// `text` (`file:line: CODE severity message`), `json`, `github`
    /// (workflow annotations) or `sarif` (code-scanning upload).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Rate the findings as this environment does by default (`prd`:
    /// destructive and locking rules are errors); with `--policy`, the
    /// environment whose defaults the file's settings override.
    #[arg(long)]
    pub environment: Option<String>,
    /// A review policy as JSON, as `GET /api/v1/environments` shows an
    /// environment's `review_policy`: `{"settings": {"CODE":
    /// "off|warning|error"}, "require_down": false}`. Without `--policy`
    /// and `--environment`, findings keep the catalogue's severities.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Migration folders (Flyway, golang-migrate, dbmate, goose or diesel
    /// layout; the up scripts are reviewed) or single SQL files (reviewed
    /// whole).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Github,
    Sarif,
}

/// A finding located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    /// The line in the file (the script's line, shifted where the script
    /// starts further down the file, as a dbmate or goose up section does).
    pub line: usize,
    pub finding: Item,
}

/// How findings are rated: an environment's name and policy.
#[derive(Debug, Clone)]
pub struct Rating {
    pub environment: String,
    pub policy: Policy,
}

impl Rating {
    /// The catalogue's severities.
    pub fn catalogue() -> Self {
        Rating {
            environment: String::new(),
            policy: Policy::catalogue(),
        }
    }

    /// The rating `--environment` and `--policy` ask for.
    pub fn from_args(environment: Option<&str>, policy: Option<&Path>) -> anyhow::Result<Self> {
        let policy = match policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let policy: Policy = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: not a review policy: {e}", path.display()))?;
                policy
                    .check()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                policy
            }
            None if environment.is_some() => Policy::default(),
            None => return Ok(Self::catalogue()),
        };
        Ok(Rating {
            environment: environment.unwrap_or_default().to_owned(),
            policy,
        })
    }
}

/// Reviews every path; each migration is reviewed on its own (the tables
/// it creates are new to it, those of other migrations are taken to exist:
/// the pipeline does not know which versions the target already has).
pub fn lint(engine: Engine, rating: &Rating, paths: &[PathBuf]) -> anyhow::Result<Vec<Located>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            lint_folder(engine, rating, path, &mut out)?;
        } else {
            let sql = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let file = path.display().to_string();
            push(&mut out, (file, 0), engine, rating, &sql, true);
        }
    }
    Ok(out)
}

fn lint_folder(
    engine: Engine,
    rating: &Rating,
    dir: &Path,
    out: &mut Vec<Located>,
) -> anyhow::Result<()> {
    let files = crate::cli::read_folder(dir)?;
    let (_, migrations) =
        import::read(&files).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let sources = import::sources(&paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    for m in &migrations {
        // The file holding the up script, and where in it the script starts.
        let candidates = sources
            .get(&m.version)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (file, offset) = candidates
            .iter()
            .filter_map(|name| {
                let (_, content) = files.iter().find(|(p, _)| p == name)?;
                let at = content.find(m.up_sql.as_str())?;
                Some((
                    name,
                    content[..at].matches('\n').count(),
                    looks_like_down(name),
                ))
            })
            .min_by_key(|(_, _, down)| *down)
            .map(|(name, offset, _)| (name.clone(), offset))
            .unwrap_or_else(|| (candidates.first().cloned().unwrap_or_default(), 0));
        push(
            out,
            (dir.join(file).display().to_string(), offset),
            engine,
            rating,
            &m.up_sql,
            m.down_sql.is_some(),
        );
    }
    Ok(())
}

fn looks_like_down(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.ends_with(".down.sql") || file == "down.sql" || file.starts_with('U')
}

/// Reviews one script found at `(file, offset)` (the line before it
/// starts), with its directives, rated as `rating` says.
fn push(
    out: &mut Vec<Located>,
    (file, offset): (String, usize),
    engine: Engine,
    rating: &Rating,
    sql: &str,
    has_down: bool,
) {
    let review = run::review_run(&run::Inputs {
        environment: &rating.environment,
        policy: &rating.policy,
        engines: &[engine],
        scripts: &[Script {
            version: "",
            sql,
            has_down,
            transactional: engine == Engine::Postgres && !directives::needs_no_transaction(sql),
        }],
        waivers: &[],
    });
    for finding in review.scripts.into_iter().flat_map(|s| s.findings) {
        out.push(Located {
            file: file.clone(),
            // A finding about the whole script points at its first line.
            line: finding.line.max(1) + offset,
            finding,
        });
    }
}

/// The findings in `format`.
pub fn render(findings: &[Located], format: Format) -> String {
    let mut s = String::new();
    match format {
        Format::Text => {
            for l in findings {
                let f = &l.finding;
                let _ = writeln!(
                    s,
                    "{}:{}: {} {} {}\n    fix: {}",
                    l.file, l.line, f.code, f.severity, f.message, f.hint
                );
                if let Some(w) = &f.waived {
                    let _ = writeln!(s, "    waived: {}", w.reason);
                }
            }
        }
        Format::Json => {
            let findings: Vec<_> = findings
                .iter()
                .map(|l| {
                    json!({
                        "file": l.file,
                        "line": l.line,
                        "statement": l.finding.statement,
                        "code": l.finding.code,
                        "severity": l.finding.severity,
                        "message": l.finding.message,
                        "hint": l.finding.hint,
                        "waived": l.finding.waived.as_ref().map(|w| &w.reason),
                    })
                })
                .collect();
            s = serde_json::to_string_pretty(&findings).expect("findings serialise");
            s.push('\n');
        }
        Format::Github => {
            for l in findings {
                let f = &l.finding;
                let level = match f.severity {
                    _ if f.waived.is_some() => "notice",
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                    Severity::Info => "notice",
                };
                let _ = writeln!(
                    s,
                    "::{level} file={},line={},title={}::{}",
                    escape_property(&l.file),
                    l.line,
                    f.code,
                    escape_data(&format!("{} — fix: {}", f.message, f.hint))
                );
            }
        }
        Format::Sarif => {
            s = serde_json::to_string_pretty(&sarif(findings)).expect("SARIF serialises");
            s.push('\n');
        }
    }
    s
}

/// SARIF 2.1.0, as code-scanning UIs read it: one run, the analyzers as
/// rules, each finding a result at its file and line.
fn sarif(findings: &[Located]) -> serde_json::Value {
    let level = |s: Severity| match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    let rules: Vec<_> = ANALYZERS
        .iter()
        .map(|a| {
            json!({
                "id": a.code,
                "shortDescription": { "text": a.summary },
                "help": { "text": a.hint },
                "defaultConfiguration": { "level": level(a.severity) },
            })
        })
        .collect();
    let results: Vec<_> = findings
        .iter()
        .map(|l| {
            json!({
                "ruleId": l.finding.code,
                "level": if l.finding.waived.is_some() { "note" } else { level(l.finding.severity) },
                "message": { "text": format!("{} (fix: {})", l.finding.message, l.finding.hint) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": l.file },
                        "region": { "startLine": l.line },
                    }
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "migrate-hub lint",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

// GitHub's workflow-command escaping (actions/toolkit `command.ts`).
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The command: prints the findings; exit 0 (no error-level finding), 1
/// (some) or 2 (the paths could not be read).
pub fn main(args: LintArgs) -> ExitCode {
    let result = Rating::from_args(args.environment.as_deref(), args.policy.as_deref())
        .and_then(|rating| lint(args.engine, &rating, &args.paths));
    match result {
        Ok(findings) => {
            // A closed pipe (`lint … | head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(
                &mut std::io::stdout(),
                render(&findings, args.format).as_bytes(),
            );
            if findings.iter().any(|l| l.finding.blocks()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
