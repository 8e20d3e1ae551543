//! Sessions that would block a migration, found before it takes its locks
//! (the pre-flight), and how they are described to people: "pid 4711 (user
//! app, application api, idle in transaction for 14 min): `SELECT …`".

use serde::Serialize;

/// One session that holds, or may hold, what a migration needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    /// PostgreSQL backend pid, MySQL connection id.
    pub pid: i64,
    pub user: String,
    /// PostgreSQL `application_name`, MySQL client host.
    pub application: String,
    /// `idle in transaction`, `active`, MySQL `Sleep`, …
    pub state: String,
    /// How long its transaction has been open.
    pub transaction_ms: Option<i64>,
    /// Its current or last statement, shortened.
    pub query: String,
}

/// Longest statement text kept in a description.
const QUERY_CHARS: usize = 120;

impl Blocker {
    /// `pid 4711 (user app, application api, idle in transaction for 14
    /// min): `SELECT …``.
    pub fn describe(&self) -> String {
        let mut who = vec![format!("user {}", self.user)];
        if !self.application.is_empty() {
            who.push(format!("application {}", self.application));
        }
        let mut state = self.state.clone();
        if let Some(ms) = self.transaction_ms {
            state.push_str(&format!(" for {}", age(ms)));
        }
        who.push(state);
        let query: String = self.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = query.chars().take(QUERY_CHARS).collect();
        let ellipsis = if query.chars().count() > QUERY_CHARS {
            "…"
        } else {
            ""
        };
        format!("pid {} ({}): `{short}{ellipsis}`", self.pid, who.join(", "))
    }
}

/// The blockers an environment that opted in terminates after the
/// pre-flight's wait: only sessions `idle in transaction` (nothing is
/// running in them; their transaction just holds its locks), whose
/// transaction is at least `after_ms` old. Never an active statement.
pub fn to_terminate(blockers: &[Blocker], after_ms: i64) -> Vec<&Blocker> {
    blockers
        .iter()
        .filter(|b| b.state == "idle in transaction")
        .filter(|b| b.transaction_ms.is_some_and(|ms| ms >= after_ms))
        .collect()
}

/// Every blocker, for the run page and a failure: the first two in full,
/// then how many more.
pub fn describe_all(blockers: &[Blocker]) -> String {
    let shown: Vec<String> = blockers.iter().take(2).map(Blocker::describe).collect();
    let mut text = shown.join("; ");
    if blockers.len() > 2 {
        text.push_str(&format!("; and {} more", blockers.len() - 2));
    }
    text
}

fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Blocker {
        Blocker {
            pid: 4711,
            user: "app".into(),
            application: "api".into(),
            state: "idle in transaction".into(),
            transaction_ms: Some(14 * 60_000 + 5_000),
            query: "SELECT *\n  FROM accounts   WHERE id = 1".into(),
        }
    }

    #[test]
    fn a_blocker_is_described_as_a_dba_reads_it() {
        assert_eq!(
            idle().describe(),
            "pid 4711 (user app, application api, idle in transaction for 14 min): `SELECT * FROM accounts WHERE id = 1`"
        );
        let long = Blocker {
            application: String::new(),
            transaction_ms: None,
            query: "x".repeat(200),
            ..idle()
        };
        let text = long.describe();
        assert!(
            text.starts_with("pid 4711 (user app, idle in transaction): `xxx"),
            "{text}"
        );
        assert!(text.ends_with("x…`"), "{text}");
    }

    #[test]
    fn only_old_idle_transactions_are_terminated() {
        let active = Blocker {
            state: "active".into(),
            ..idle()
        };
        let young = Blocker {
            transaction_ms: Some(500),
            ..idle()
        };
        let unknown = Blocker {
            transaction_ms: None,
            ..idle()
        };
        let old = idle();
        let all = [active, young, unknown, old.clone()];
        assert_eq!(to_terminate(&all, 60_000), [&old]);
        assert!(
            to_terminate(&all[..3], 0).len() == 1,
            "the young idle one, never the active one"
        );
    }

    #[test]
    fn many_blockers_are_summed_up() {
        assert_eq!(describe_all(&[]), "");
        let text = describe_all(&[idle(), idle(), idle(), idle()]);
        assert!(text.ends_with("; and 2 more"), "{text}");
        assert_eq!(text.matches("pid 4711").count(), 2);
    }
}
