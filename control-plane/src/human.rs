//! Times and durations as people read them: "3 min ago", "in 2 h", "1.2 s",
//! "3 min 4 s". The pages render them on the server (no client script),
//! with the exact UTC time in a `<time>` element's `datetime` and `title`.

use time::{OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};

/// `then` relative to `now`: "just now", "42 s ago", "3 min ago",
/// "5 h ago", "2 d ago", or "in …" for the future; beyond 30 days, the
/// date.
pub fn relative(then: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds();
    let (past, secs) = (secs >= 0, secs.unsigned_abs());
    let amount = match secs {
        0..=4 => return "just now".into(),
        5..=59 => format!("{secs} s"),
        60..=3_599 => format!("{} min", secs / 60),
        3_600..=86_399 => format!("{} h", secs / 3_600),
        86_400..=2_591_999 => format!("{} d", secs / 86_400),
        _ => return date(then),
    };
    if past {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// The exact time, to the second, in UTC: `2026-12-06 10:28:00 UTC`.
pub fn exact(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default()
}

fn date(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// A duration in milliseconds: "850 ms", "1.2 s", "42 s", "3 min 4 s",
/// "2 h 5 min".
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=9_999 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..=59_999 => format!("{} s", ms / 1000),
        60_000..=3_599_999 => {
            let s = ms / 1000;
            format!("{} min {} s", s / 60, s % 60)
        }
        _ => {
            let m = ms / 60_000;
            format!("{} h {} min", m / 60, m % 60)
        }
    }
}

/// The `<time>` element of an RFC 3339 timestamp, relative to `now`; text
/// that is not a timestamp is returned escaped, as it was.
pub fn time_element(value: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(value, &Rfc3339) {
        Ok(at) => format!(
            "<time datetime=\"{}\" title=\"{}\">{}</time>",
            escape(value),
            exact(at),
            relative(at, now)
        ),
        Err(_) => escape(value),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn relative_times_read_like_speech() {
        let now = datetime!(2026-12-06 10:30:00 UTC);
        for (then, said) in [
            (datetime!(2026-12-06 10:29:58 UTC), "just now"),
            (datetime!(2026-12-06 10:29:18 UTC), "42 s ago"),
            (datetime!(2026-12-06 10:27:00 UTC), "3 min ago"),
            (datetime!(2026-12-06 05:00:00 UTC), "5 h ago"),
            (datetime!(2026-12-04 10:00:00 UTC), "2 d ago"),
            (datetime!(2026-12-06 12:30:00 UTC), "in 2 h"),
            (datetime!(2026-10-01 08:00:00 UTC), "2026-10-01"),
        ] {
            assert_eq!(relative(then, now), said, "{then}");
        }
    }

    #[test]
    fn durations_pick_their_unit() {
        for (ms, said) in [
            (0, "0 ms"),
            (850, "850 ms"),
            (1_234, "1.2 s"),
            (42_000, "42 s"),
            (184_000, "3 min 4 s"),
            (7_500_000, "2 h 5 min"),
            (-5, "0 ms"),
        ] {
            assert_eq!(duration(ms), said);
        }
    }

    #[test]
    fn time_elements_carry_the_exact_time_and_escape_anything_else() {
        let now = datetime!(2026-12-06 10:30:01 UTC);
        assert_eq!(
            time_element("2026-12-06T10:27:00.651037Z", now),
            "<time datetime=\"2026-12-06T10:27:00.651037Z\" title=\"2026-12-06 10:27:00 UTC\">3 min ago</time>"
        );
        assert_eq!(time_element("<b>", now), "&lt;b&gt;");
    }
}
