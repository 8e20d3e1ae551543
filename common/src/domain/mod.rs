//! Domain rules: pure functions and types, no I/O.

pub mod approval;
pub mod baseline;
pub mod blockers;
pub mod checksum;
pub mod directives;
pub mod dispatch;
pub mod drift;
pub mod fleet;
pub mod import;
pub mod lock_retry;
pub mod order;
pub mod pools;
pub mod progress;
pub mod resume;
pub mod role;
pub mod run;
pub mod schema;
pub mod schema_drift;
pub mod signin;
pub mod slug;
pub mod split;
pub mod target;
pub mod text_enum;
pub mod version;
pub mod window;

pub use checksum::Checksum;
pub use role::{Capability, Role};
pub use run::{Direction, RunState, TargetState};
pub use slug::ProjectSlug;
pub use target::{Engine, TlsMode};
pub use version::Version;

/// A moment as messages show it: RFC 3339 in UTC, to the second.
pub fn utc_seconds(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn moments_show_in_utc_to_the_second() {
        let at = time::macros::datetime!(2026-12-06 18:30:05.123456 +01:00);
        assert_eq!(super::utc_seconds(at), "2026-12-06T17:30:05Z");
    }
}
