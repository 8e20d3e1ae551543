//! The review of a run: every script it pins, reviewed for every engine its
//! targets run, rated by the environment's policy, with the waivers written
//! in the scripts and those admins gave on the run; its risk; and the digest
//! of it all, which the run's digest covers (an approval pins the review it
//! saw).
//!
//! Pure: the caller loads the scripts, the policy and the waivers.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Context, Finding, Severity,
    policy::{self, Policy, Reviewed, Risk},
    review, rules,
};
use crate::domain::Engine;

/// Changes whenever an analyzer reports something new or different: a run
/// reviewed by another version is reviewed again before it is approved.
pub const ANALYZERS_VERSION: &str = "2026-12-06.1";

/// Analyzers that judge a migration as a whole rather than a statement;
/// [`review_run`] reports them (line 0 means the whole script).
pub const RUN_LEVEL: &[&str] = &["down-absent", "allow-directive"];

/// One script a run pins, in execution order.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub version: &'a str,
    /// The SQL the run executes (the up script of an `up` run, the down
    /// script of a `down` run).
    pub sql: &'a str,
    /// Whether the migration has a down script at all.
    pub has_down: bool,
    /// Whether the PostgreSQL executor runs it in one transaction.
    pub transactional: bool,
}

/// An admin's waiver of one finding of a run: its version, code and line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminWaiver {
    pub version: String,
    pub code: String,
    pub line: usize,
    pub reason: String,
    /// Who gave it (e-mail).
    pub by: String,
}

/// What a run's review needs.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub environment: &'a str,
    pub policy: &'a Policy,
    /// The engines of the run's targets (each is reviewed once).
    pub engines: &'a [Engine],
    pub scripts: &'a [Script<'a>],
    pub waivers: &'a [AdminWaiver],
}

/// Who waived a finding, and why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waived {
    /// `script` (a `-- migrate-hub:allow` directive) or `admin`.
    pub by: String,
    pub reason: String,
    /// The admin's e-mail, for admin waivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// One finding of a run's review, rated by the policy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub code: String,
    pub severity: Severity,
    pub message: String,
    /// 1-based statement; 0 for a finding about the whole script.
    pub statement: usize,
    /// 1-based line of the statement; 0 for the whole script.
    pub line: usize,
    pub hint: String,
    pub waived: Option<Waived>,
}

impl Item {
    /// Whether the item keeps the run from being approved.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Error && self.waived.is_none()
    }
}

/// The findings of one script for one engine.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptReview {
    pub version: String,
    pub engine: Engine,
    pub findings: Vec<Item>,
}

/// A run's review, as stored with the run and shown to its approvers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReview {
    /// [`ANALYZERS_VERSION`] of the hub that reviewed it.
    pub analyzers: String,
    pub risk: Risk,
    pub scripts: Vec<ScriptReview>,
}

/// A finding that keeps the run from being approved, for the error that
/// lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocking {
    pub version: String,
    pub engine: Engine,
    pub code: String,
    pub line: usize,
    pub message: String,
}

impl RunReview {
    /// The findings that keep the run from being approved: errors nobody
    /// waived.
    pub fn blocking(&self) -> Vec<Blocking> {
        self.scripts
            .iter()
            .flat_map(|s| {
                s.findings.iter().filter(|f| f.blocks()).map(|f| Blocking {
                    version: s.version.clone(),
                    engine: s.engine,
                    code: f.code.clone(),
                    line: f.line,
                    message: f.message.clone(),
                })
            })
            .collect()
    }

    /// The finding `code` at `line` of `version` (what an admin waiver
    /// names), of the first engine that reports it.
    pub fn find(&self, version: &str, code: &str, line: usize) -> Option<&Item> {
        self.scripts
            .iter()
            .filter(|s| s.version == version)
            .flat_map(|s| &s.findings)
            .find(|f| f.code == code && f.line == line)
    }

    /// SHA-256 over the canonical JSON of the review: the analyzers'
    /// version, every rated finding and every waiver. What the policy made
    /// of the findings is in their severities, so a policy change that
    /// changes nothing for this run leaves the digest as it was.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a review serializes");
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Reviews a run (see the module's documentation).
pub fn review_run(inputs: &Inputs<'_>) -> RunReview {
    let engines: BTreeSet<&str> = inputs.engines.iter().map(|e| e.as_str()).collect();
    let mut scripts = Vec::new();
    for engine in Engine::ALL
        .iter()
        .copied()
        .filter(|e| engines.contains(e.as_str()))
    {
        let mut created = BTreeSet::new();
        for script in inputs.scripts {
            let mut ctx = Context {
                transactional: engine == Engine::Postgres && script.transactional,
                created_tables: std::mem::take(&mut created),
            };
            let mut findings = review(engine, script.sql, &mut ctx);
            created = ctx.created_tables;
            let mut allows = Vec::new();
            for directive in policy::directives(script.sql) {
                match directive {
                    Ok(allow) => allows.push(allow),
                    Err(bad) => findings.push(whole("allow-directive", bad.line, bad.message)),
                }
            }
            if inputs.policy.require_down && !script.has_down {
                findings.push(whole(
                    "down-absent",
                    0,
                    format!("version {} has no down script", script.version),
                ));
            }
            let rated = inputs.policy.rate(inputs.environment, findings);
            let findings = policy::waive(rated, &allows)
                .into_iter()
                .map(|r| item(r, script.version, inputs.waivers))
                .collect();
            scripts.push(ScriptReview {
                version: script.version.to_owned(),
                engine,
                findings,
            });
        }
    }
    let risk = Risk::of_severities(
        scripts
            .iter()
            .flat_map(|s| s.findings.iter().map(|f| f.severity)),
    );
    RunReview {
        analyzers: ANALYZERS_VERSION.to_owned(),
        risk,
        scripts,
    }
}

/// A finding of a run-level analyzer at `line` (0: the whole script).
fn whole(code: &'static str, line: usize, message: String) -> Finding {
    let analyzer = rules::analyzer(code);
    Finding {
        code,
        severity: analyzer.severity,
        message,
        statement: 0,
        line,
        hint: analyzer.hint.to_owned(),
    }
}

fn item(reviewed: Reviewed, version: &str, waivers: &[AdminWaiver]) -> Item {
    let f = reviewed.finding;
    let waived = reviewed
        .waived
        .map(|reason| Waived {
            by: "script".into(),
            reason,
            admin: None,
        })
        .or_else(|| {
            waivers
                .iter()
                .find(|w| w.version == version && w.code == f.code && w.line == f.line)
                .map(|w| Waived {
                    by: "admin".into(),
                    reason: w.reason.clone(),
                    admin: Some(w.by.clone()),
                })
        });
    Item {
        code: f.code.to_owned(),
        severity: f.severity,
        message: f.message,
        statement: f.statement,
        line: f.line,
        hint: f.hint,
        waived,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::review::policy::Setting;

    fn script<'a>(version: &'a str, sql: &'a str) -> Script<'a> {
        Script {
            version,
            sql,
            has_down: true,
            transactional: true,
        }
    }

    fn run(
        env: &str,
        policy: &Policy,
        scripts: &[Script<'_>],
        waivers: &[AdminWaiver],
    ) -> RunReview {
        review_run(&Inputs {
            environment: env,
            policy,
            engines: &[Engine::Postgres],
            scripts,
            waivers,
        })
    }

    fn codes(review: &RunReview) -> Vec<(&str, Severity, bool)> {
        review
            .scripts
            .iter()
            .flat_map(|s| {
                s.findings
                    .iter()
                    .map(|f| (f.code.as_str(), f.severity, f.waived.is_some()))
            })
            .collect()
    }

    #[test]
    fn a_table_created_earlier_in_the_run_is_not_existing() {
        let scripts = [
            script("1", "CREATE TABLE t (id int PRIMARY KEY);"),
            script("2", "CREATE INDEX t_id ON t (id);"),
        ];
        let review = run("prd", &Policy::default(), &scripts, &[]);
        assert!(codes(&review).is_empty(), "{review:?}");
        assert_eq!(review.risk, Risk::Low);
        // Alone, the second script indexes an existing table: an error on prd.
        let review = run("prd", &Policy::default(), &scripts[1..], &[]);
        assert_eq!(
            codes(&review),
            [("index-not-concurrent", Severity::Error, false)]
        );
        assert_eq!(review.risk, Risk::High);
        assert_eq!(review.blocking().len(), 1);
        // Elsewhere it warns and blocks nothing.
        let review = run("stg", &Policy::default(), &scripts[1..], &[]);
        assert_eq!(review.risk, Risk::Medium);
        assert!(review.blocking().is_empty());
    }

    #[test]
    fn each_engine_of_the_targets_is_reviewed() {
        let scripts = [script("1", "CREATE TABLE t (a int);")];
        let review = review_run(&Inputs {
            environment: "daily",
            policy: &Policy::default(),
            engines: &[Engine::Mysql, Engine::Postgres, Engine::Mysql],
            scripts: &scripts,
            waivers: &[],
        });
        let engines: Vec<_> = review.scripts.iter().map(|s| s.engine).collect();
        assert_eq!(engines, [Engine::Postgres, Engine::Mysql]);
    }

    #[test]
    fn down_absent_fires_only_where_the_policy_wants_rollbacks() {
        let mut no_down = script("7", "CREATE TABLE t (id int PRIMARY KEY);");
        no_down.has_down = false;
        let with_down = script("8", "CREATE TABLE u (id int PRIMARY KEY);");
        let wants = Policy {
            require_down: true,
            ..Policy::default()
        };
        let review = run("stg", &wants, &[no_down.clone(), with_down], &[]);
        assert_eq!(codes(&review), [("down-absent", Severity::Error, false)]);
        assert_eq!(review.scripts[0].findings[0].line, 0);
        assert!(codes(&run("stg", &Policy::default(), &[no_down.clone()], &[])).is_empty());
        // A directive anywhere in the script waives a whole-script finding.
        let sql = "CREATE TABLE t (id int PRIMARY KEY);\n-- migrate-hub:allow down-absent the data cannot be restored\n";
        let waived = Script { sql, ..no_down };
        assert_eq!(
            codes(&run("stg", &wants, &[waived], &[])),
            [("down-absent", Severity::Error, true)]
        );
    }

    #[test]
    fn a_bad_directive_is_an_error_and_waives_nothing() {
        let sql = "-- migrate-hub:allow drop-tabel typo\nDROP TABLE t;\n";
        let review = run("daily", &Policy::default(), &[script("1", sql)], &[]);
        assert_eq!(
            codes(&review),
            [
                ("drop-table", Severity::Warning, false),
                ("allow-directive", Severity::Error, false)
            ]
        );
        assert_eq!(review.scripts[0].findings[1].line, 1);
        let good = "-- migrate-hub:allow drop-table moved to the archive\nDROP TABLE t;\n";
        let review = run("daily", &Policy::default(), &[script("1", good)], &[]);
        assert_eq!(codes(&review), [("drop-table", Severity::Warning, true)]);
    }

    #[test]
    fn admin_waivers_unblock_and_change_the_digest_but_not_the_risk() {
        let scripts = [script("3", "SELECT 1;\nDROP TABLE old;")];
        let before = run("prd", &Policy::default(), &scripts, &[]);
        assert_eq!(before.blocking().len(), 1);
        assert!(before.find("3", "drop-table", 2).is_some());
        assert!(before.find("3", "drop-table", 1).is_none());
        let waiver = AdminWaiver {
            version: "3".into(),
            code: "drop-table".into(),
            line: 2,
            reason: "archived last quarter".into(),
            by: "admin@example.com".into(),
        };
        let after = run("prd", &Policy::default(), &scripts, &[waiver]);
        assert!(after.blocking().is_empty());
        assert_eq!(after.risk, Risk::High);
        assert_ne!(before.digest(), after.digest());
        let waived = after.scripts[0].findings[0].waived.as_ref().unwrap();
        assert_eq!(
            (waived.by.as_str(), waived.admin.as_deref()),
            ("admin", Some("admin@example.com"))
        );
    }

    #[test]
    fn the_digest_follows_the_result_not_the_policy_text() {
        let scripts = [script("1", "CREATE INDEX i ON t (a);")];
        let base = run("stg", &Policy::default(), &scripts, &[]);
        // A setting for an analyzer that reports nothing here changes nothing.
        let unrelated = Policy::new(BTreeMap::from([("truncate".into(), Setting::Off)])).unwrap();
        assert_eq!(
            run("stg", &unrelated, &scripts, &[]).digest(),
            base.digest()
        );
        // Raising the one that fires does.
        let raised = Policy::new(BTreeMap::from([(
            "index-not-concurrent".into(),
            Setting::Error,
        )]))
        .unwrap();
        let stricter = run("stg", &raised, &scripts, &[]);
        assert_ne!(stricter.digest(), base.digest());
        assert_eq!(stricter.risk, Risk::High);
        // Stored and read back, the review is the same.
        let json = serde_json::to_value(&stricter).unwrap();
        let back: RunReview = serde_json::from_value(json).unwrap();
        assert_eq!(back, stricter);
    }
}
