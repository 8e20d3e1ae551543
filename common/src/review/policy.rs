//! What a review means for a run: each environment's policy (every
//! analyzer `off`, `warning` or `error`), the waivers an author writes into
//! the script, the findings that block an approval, and the run's risk.
//!
//! Pure, like the analyzers. Defaults follow what an operator of a
//! production fleet expects: on `prd` every destructive and locking rule is
//! an error (someone must waive it, with a reason, before anyone approves)
//! and the other rules keep the catalogue's severity; elsewhere they warn —
//! a rename on `daily` is worth knowing, not worth a waiver. A rule whose
//! finding means the script cannot run as written (`CONCURRENTLY` inside a
//! transaction, `BEGIN`/`COMMIT` in a transactional migration) is an error
//! everywhere, and so are the hygiene rules the catalogue makes errors
//! (`allow-directive`: a typo in a waiver; `down-absent`, which reports only
//! where the environment asks for down scripts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ANALYZERS, Analyzer, Category, Finding, Severity};

/// The directive that waives a finding in the script itself:
/// `-- migrate-hub:allow CODE reason`. It is part of the script, so of its
/// checksum, and is reviewed like the code.
pub const ALLOW: &str = "migrate-hub:allow";

/// What an environment's policy makes of one analyzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Setting {
    Off,
    Warning,
    Error,
}

/// An environment's review policy: the settings it chose; every other
/// analyzer follows [`Policy::default_setting`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub settings: BTreeMap<String, Setting>,
    /// Every migration of an `up` run must have a down script
    /// (`down-absent` reports those that have none).
    #[serde(default)]
    pub require_down: bool,
}

/// A policy that names an analyzer the hub does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown analyzer `{0}`; the analyzers are listed in docs/SQL_Review.md")]
pub struct UnknownAnalyzer(pub String);

impl Policy {
    /// A policy with `settings`, each naming a known analyzer.
    pub fn new(settings: BTreeMap<String, Setting>) -> Result<Self, UnknownAnalyzer> {
        let policy = Policy {
            settings,
            require_down: false,
        };
        policy.check()?;
        Ok(policy)
    }

    /// Every analyzer at the severity of the catalogue (what a review
    /// outside any environment reports: `lint` without a policy).
    pub fn catalogue() -> Self {
        Policy {
            settings: ANALYZERS
                .iter()
                .map(|a| {
                    let setting = match a.severity {
                        Severity::Error => Setting::Error,
                        Severity::Warning | Severity::Info => Setting::Warning,
                    };
                    (a.code.to_owned(), setting)
                })
                .collect(),
            require_down: false,
        }
    }

    /// Checks that every setting names a known analyzer (a policy read from
    /// a file or a request body).
    pub fn check(&self) -> Result<(), UnknownAnalyzer> {
        match self.settings.keys().find(|c| analyzer(c).is_none()) {
            Some(code) => Err(UnknownAnalyzer(code.clone())),
            None => Ok(()),
        }
    }

    /// The analyzer's setting on `environment` when the policy says nothing
    /// of it.
    pub fn default_setting(environment: &str, analyzer: &Analyzer) -> Setting {
        let cannot_run =
            analyzer.category == Category::Locking && analyzer.severity == Severity::Error;
        let prd = environment == "prd";
        match analyzer.category {
            _ if cannot_run => Setting::Error,
            Category::Destructive | Category::Locking if prd => Setting::Error,
            Category::Hygiene
            | Category::Parse
            | Category::BackwardIncompatible
            | Category::DataDependent
                if (prd || analyzer.category == Category::Hygiene)
                    && analyzer.severity == Severity::Error =>
            {
                Setting::Error
            }
            _ => Setting::Warning,
        }
    }

    /// The analyzer's setting on `environment` under this policy.
    pub fn setting(&self, environment: &str, analyzer: &Analyzer) -> Setting {
        self.settings
            .get(analyzer.code)
            .copied()
            .unwrap_or_else(|| Self::default_setting(environment, analyzer))
    }

    /// Every analyzer with its setting on `environment`, in catalogue
    /// order: what the environment's page and API show.
    pub fn effective(&self, environment: &str) -> Vec<(&'static str, Setting)> {
        ANALYZERS
            .iter()
            .map(|a| (a.code, self.setting(environment, a)))
            .collect()
    }

    /// The findings as this policy on `environment` rates them: an analyzer
    /// set `off` reports nothing, the others report at their setting.
    pub fn rate(&self, environment: &str, findings: Vec<Finding>) -> Vec<Finding> {
        findings
            .into_iter()
            .filter_map(|mut f| {
                let setting =
                    analyzer(f.code).map_or(Setting::Warning, |a| self.setting(environment, a));
                f.severity = match setting {
                    Setting::Off => return None,
                    Setting::Warning => Severity::Warning,
                    Setting::Error => Severity::Error,
                };
                Some(f)
            })
            .collect()
    }
}

fn analyzer(code: &str) -> Option<&'static Analyzer> {
    ANALYZERS.iter().find(|a| a.code == code)
}

/// A waiver written into a script: `-- migrate-hub:allow CODE reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// The 1-based line of the directive.
    pub line: usize,
    pub code: String,
    pub reason: String,
}

/// A directive that cannot waive anything: it names no analyzer the hub
/// has, or gives no reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct BadAllow {
    pub line: usize,
    pub message: String,
}

/// The waivers of a script, in line order; a directive without a known code
/// or a reason is refused (so a typo never waives silently).
pub fn allows(sql: &str) -> Result<Vec<Allow>, BadAllow> {
    directives(sql).into_iter().collect()
}

/// Every waiver directive of a script, in line order, each read or refused
/// on its own (a review reports the refused ones and keeps the others).
pub fn directives(sql: &str) -> Vec<Result<Allow, BadAllow>> {
    let mut found = Vec::new();
    for (i, text) in sql.lines().enumerate() {
        let line = i + 1;
        let Some(comment) = text.trim_start().strip_prefix("--") else {
            continue;
        };
        let Some(rest) = comment.trim_start().strip_prefix(ALLOW) else {
            continue;
        };
        let mut words = rest.trim().splitn(2, char::is_whitespace);
        let code = words.next().unwrap_or_default();
        let reason = words.next().unwrap_or_default().trim();
        found.push(if analyzer(code).is_none() {
            Err(BadAllow {
                line,
                message: format!("`{ALLOW}` names no known analyzer (`{code}`)"),
            })
        } else if reason.is_empty() {
            Err(BadAllow {
                line,
                message: format!("`{ALLOW} {code}` needs a reason after the code"),
            })
        } else {
            Ok(Allow {
                line,
                code: code.to_owned(),
                reason: reason.to_owned(),
            })
        });
    }
    found
}

/// A finding and, when it is waived, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reviewed {
    #[serde(flatten)]
    pub finding: Finding,
    /// The reason of the directive that waives it.
    pub waived: Option<String>,
}

/// Applies a script's waivers to its findings: a directive waives its code
/// on the next statement after it that has that finding (all of that
/// statement's findings of the code), so one directive covers one
/// statement, the one it stands above. A finding about the whole script
/// (line 0, such as `down-absent`) is waived by a directive of its code
/// anywhere in the script.
pub fn waive(findings: Vec<Finding>, allows: &[Allow]) -> Vec<Reviewed> {
    let mut waived: Vec<Option<String>> = vec![None; findings.len()];
    for allow in allows {
        let next_line = findings
            .iter()
            .filter(|f| f.code == allow.code && f.line > allow.line)
            .map(|f| f.line)
            .min();
        for (i, f) in findings.iter().enumerate() {
            let covers = f.line == 0 || Some(f.line) == next_line;
            if covers && f.code == allow.code && waived[i].is_none() {
                waived[i] = Some(allow.reason.clone());
            }
        }
    }
    findings
        .into_iter()
        .zip(waived)
        .map(|(finding, waived)| Reviewed { finding, waived })
        .collect()
}

/// The findings that keep a run from being approved: errors not waived.
pub fn blocking(reviewed: &[Reviewed]) -> Vec<&Finding> {
    reviewed
        .iter()
        .filter(|r| r.finding.severity == Severity::Error && r.waived.is_none())
        .map(|r| &r.finding)
        .collect()
}

/// How risky a run is, from its findings (waived ones included: a waiver
/// lets a run through, it does not make it safe).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Risk {
        Self::of_severities(findings.into_iter().map(|f| f.severity))
    }

    /// The risk of findings of these (rated) severities.
    pub fn of_severities(severities: impl IntoIterator<Item = Severity>) -> Risk {
        severities
            .into_iter()
            .map(|s| match s {
                Severity::Error => Risk::High,
                Severity::Warning => Risk::Medium,
                Severity::Info => Risk::Low,
            })
            .max()
            .unwrap_or(Risk::Low)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(code: &'static str, severity: Severity, line: usize) -> Finding {
        Finding {
            code,
            severity,
            message: String::new(),
            statement: line,
            line,
            hint: String::new(),
        }
    }

    fn by_code(code: &str) -> &'static Analyzer {
        analyzer(code).expect("known analyzer")
    }

    #[test]
    fn destructive_and_locking_rules_are_errors_on_prd_and_warnings_elsewhere() {
        let policy = Policy::default();
        for code in ["drop-table", "index-not-concurrent", "mysql-copy-alter"] {
            assert_eq!(
                policy.setting("prd", by_code(code)),
                Setting::Error,
                "{code} on prd"
            );
            assert_eq!(
                policy.setting("stg", by_code(code)),
                Setting::Warning,
                "{code} on stg"
            );
        }
    }

    #[test]
    fn a_script_that_cannot_run_is_an_error_everywhere() {
        let policy = Policy::default();
        for code in ["concurrently-in-transaction", "transaction-control"] {
            assert_eq!(
                policy.setting("daily", by_code(code)),
                Setting::Error,
                "{code}"
            );
        }
        // Other categories keep the catalogue's severity on prd, and warn
        // elsewhere; hygiene errors stay errors.
        assert_eq!(
            policy.setting("prd", by_code("rename-column")),
            Setting::Error
        );
        assert_eq!(
            policy.setting("daily", by_code("rename-column")),
            Setting::Warning
        );
        assert_eq!(
            policy.setting("daily", by_code("allow-directive")),
            Setting::Error
        );
        assert_eq!(
            policy.setting("prd", by_code("table-without-primary-key")),
            Setting::Warning
        );
    }

    #[test]
    fn an_environment_setting_overrides_the_default_and_off_drops_the_finding() {
        let policy = Policy::new(BTreeMap::from([
            ("drop-table".to_owned(), Setting::Off),
            ("table-without-primary-key".to_owned(), Setting::Error),
        ]))
        .unwrap();
        let rated = policy.rate(
            "prd",
            vec![
                finding("drop-table", Severity::Error, 1),
                finding("table-without-primary-key", Severity::Warning, 2),
                finding("index-not-concurrent", Severity::Warning, 3),
            ],
        );
        let codes: Vec<_> = rated.iter().map(|f| (f.code, f.severity)).collect();
        assert_eq!(
            codes,
            [
                ("table-without-primary-key", Severity::Error),
                ("index-not-concurrent", Severity::Error),
            ]
        );
    }

    #[test]
    fn a_policy_naming_an_unknown_analyzer_is_refused() {
        let err =
            Policy::new(BTreeMap::from([("drop-tabel".to_owned(), Setting::Off)])).unwrap_err();
        assert_eq!(err, UnknownAnalyzer("drop-tabel".into()));
    }

    #[test]
    fn allow_directives_need_a_known_code_and_a_reason() {
        let sql = "-- migrate-hub:allow drop-table the table moved to the archive service\nDROP TABLE t;\n";
        assert_eq!(
            allows(sql).unwrap(),
            [Allow {
                line: 1,
                code: "drop-table".into(),
                reason: "the table moved to the archive service".into(),
            }]
        );
        assert_eq!(
            allows("--migrate-hub:allow drop-tabel typo\n")
                .unwrap_err()
                .line,
            1
        );
        assert!(
            allows("SELECT 1;\n  -- migrate-hub:allow drop-table\n")
                .unwrap_err()
                .message
                .contains("needs a reason")
        );
        // A directive in the middle of code is not a comment line.
        assert!(
            allows("SELECT 1; -- migrate-hub:allow drop-table x\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_directive_waives_its_code_on_the_next_statement_that_has_it_only() {
        let findings = vec![
            finding("drop-table", Severity::Error, 1),
            finding("drop-table", Severity::Error, 3),
            finding("truncate", Severity::Error, 3),
            finding("drop-table", Severity::Error, 5),
        ];
        let allow = Allow {
            line: 2,
            code: "drop-table".into(),
            reason: "archived".into(),
        };
        let reviewed = waive(findings, &[allow]);
        let waived: Vec<_> = reviewed.iter().map(|r| r.waived.is_some()).collect();
        assert_eq!(waived, [false, true, false, false]);
        let blocking: Vec<_> = blocking(&reviewed)
            .iter()
            .map(|f| (f.code, f.line))
            .collect();
        assert_eq!(
            blocking,
            [("drop-table", 1), ("truncate", 3), ("drop-table", 5)]
        );
    }

    #[test]
    fn risk_is_the_worst_finding_waived_or_not() {
        assert_eq!(Risk::of(&[]), Risk::Low);
        let warn = finding("index-not-concurrent", Severity::Warning, 1);
        let error = finding("drop-table", Severity::Error, 2);
        assert_eq!(Risk::of([&warn]), Risk::Medium);
        assert_eq!(Risk::of([&warn, &error]), Risk::High);
    }
}
