//! Short lock budgets, retried: a migration takes its locks with a short
//! `lock_timeout` (PostgreSQL) / `lock_wait_timeout` (MySQL) so that other
//! sessions' queries never queue behind it for longer than that, and when
//! the budget runs out it is tried again after a pause — only where trying
//! again is safe: a transactional PostgreSQL migration (rolled back whole),
//! or a statement-by-statement script whose first statement is the one that
//! timed out (nothing of it was applied).

use std::time::Duration;

/// The first pause; each retry doubles it, up to [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause between two attempts.
pub const MAX_PAUSE: Duration = Duration::from_secs(30);
/// Most retries a policy may ask for.
pub const MAX_RETRIES: i32 = 20;

/// Whether a lock timeout of the migration that stopped at `statement`
/// (1-based, of the part that ran this attempt) may be retried.
pub fn retry_is_safe(transactional: bool, statement: usize) -> bool {
    transactional || statement <= 1
}

/// The pause before retry `retry` (1 for the first retry), with `jitter` in
/// `0.0..1.0` spreading the pause between 50 % and 150 % of its nominal
/// length, so that the targets of a fan-out do not come back in step.
pub fn pause(retry: u32, jitter: f64) -> Duration {
    let nominal = FIRST_PAUSE
        .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
        .min(MAX_PAUSE);
    nominal.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_jitter_spreads_them() {
        assert_eq!(pause(1, 0.5), Duration::from_millis(500));
        assert_eq!(pause(2, 0.5), Duration::from_secs(1));
        assert_eq!(pause(4, 0.5), Duration::from_secs(4));
        assert_eq!(pause(20, 0.5), MAX_PAUSE);
        assert_eq!(pause(1, 0.0), Duration::from_millis(250));
        assert_eq!(pause(1, 1.0), Duration::from_millis(750));
        assert_eq!(pause(1, 7.0), Duration::from_millis(750), "clamped");
    }

    #[test]
    fn only_whole_transactions_or_untouched_scripts_are_retried() {
        assert!(retry_is_safe(true, 7));
        assert!(retry_is_safe(false, 1));
        assert!(!retry_is_safe(false, 2));
    }
}
