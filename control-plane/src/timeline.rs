//! The timeline of a run: one bar per target, in the run's order, from the
//! moment its job was queued — queued, then connecting, pre-flight and lock
//! wait, then executing its migrations — to the moment it ended (or now).
//! An SVG drawn on the server, styled by the stylesheet's `tl-*` classes:
//! no script, and it scales to any number of targets.

use std::fmt::Write as _;

use common::{domain::TargetState, store::runs::ExecutionRow};
use time::OffsetDateTime;

/// Width of the drawing in its own units; the bars' x positions are the
/// share of the run's time span.
const WIDTH: f64 = 1000.0;
/// Height of one target's row in the drawing's units (the bar is 80 %).
const ROW: f64 = 10.0;

/// The timeline, or `None` while no target was queued.
pub fn svg(targets: &[ExecutionRow], now: OffsetDateTime) -> Option<String> {
    let from = targets.iter().filter_map(|t| t.queued_at).min()?;
    let end_of = |t: &ExecutionRow| {
        if t.state.is_final() {
            t.finished_at.unwrap_or(now)
        } else {
            now
        }
    };
    let to = targets
        .iter()
        .filter(|t| t.queued_at.is_some())
        .map(end_of)
        .max()
        .unwrap_or(now);
    let span = (to - from).as_seconds_f64().max(1.0);
    let x = |at: OffsetDateTime| ((at - from).as_seconds_f64() / span * WIDTH).clamp(0.0, WIDTH);
    let n = targets.len();
    let height_px = (n * 6).clamp(60, 360);
    let mut out = String::with_capacity(200 + n * 220);
    let _ = write!(
        out,
        r#"<svg class="timeline" role="img" aria-label="Timeline of the run's {n} targets over {span:.0} s: queued, then connecting and waiting for locks, then executing" viewBox="0 0 {WIDTH} {h}" preserveAspectRatio="none" width="100%" height="{height_px}">"#,
        h = n as f64 * ROW,
    );
    for (i, t) in targets.iter().enumerate() {
        let Some(queued) = t.queued_at else { continue };
        let end = end_of(t);
        let y = i as f64 * ROW + ROW * 0.1;
        let bad = matches!(t.state, TargetState::Failed | TargetState::Interrupted);
        let _ = write!(
            out,
            "<g><title>{}: {}</title>",
            escape(&t.target_name),
            t.state.as_str()
        );
        let started = t.started_at.unwrap_or(end);
        let executing = t.executing_at.unwrap_or(end);
        let phases: Vec<(&str, OffsetDateTime, OffsetDateTime)> = [
            ("tl-q", queued, started),
            ("tl-w", started, executing),
            ("tl-x", executing, end),
        ]
        .into_iter()
        .filter(|(_, a, b)| b > a)
        .collect();
        for (i, (class, a, b)) in phases.iter().enumerate() {
            // A failure shows on the phase it ended in.
            let bad = if bad && i + 1 == phases.len() {
                " tl-bad"
            } else {
                ""
            };
            let (x0, x1) = (x(*a), x(*b));
            let _ = write!(
                out,
                r#"<rect class="{class}{bad}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}"/>"#,
                w = (x1 - x0).max(0.5),
                bh = ROW * 0.8,
            );
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    Some(out)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use time::{Duration, macros::datetime};

    use super::*;

    fn target(
        name: &str,
        state: TargetState,
        times: [Option<i64>; 4],
        t0: OffsetDateTime,
    ) -> ExecutionRow {
        let at = |s: Option<i64>| s.map(|s| t0 + Duration::seconds(s));
        ExecutionRow {
            queued_at: at(times[0]),
            started_at: at(times[1]),
            executing_at: at(times[2]),
            finished_at: at(times[3]),
            ..crate::run_view::tests::row(name, state, false)
        }
    }

    #[test]
    fn each_target_is_a_bar_of_its_phases_on_the_runs_time_scale() {
        let t0 = datetime!(2026-12-06 12:00 UTC);
        let now = t0 + Duration::seconds(10);
        let targets = [
            target(
                "a",
                TargetState::Succeeded,
                [Some(0), Some(1), Some(2), Some(5)],
                t0,
            ),
            target(
                "<b>",
                TargetState::Running,
                [Some(0), Some(5), None, None],
                t0,
            ),
            target("c", TargetState::Pending, [None; 4], t0),
            target(
                "d",
                TargetState::Failed,
                [Some(0), Some(1), None, Some(3)],
                t0,
            ),
        ];
        let svg = svg(&targets, now).unwrap();
        // a: queued 0–1 s, waiting 1–2 s, executing 2–5 s of a 10 s span.
        assert!(
            svg.contains(r#"<rect class="tl-q" x="0.0" y="1.0" width="100.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect class="tl-w" x="100.0" y="1.0" width="100.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect class="tl-x" x="200.0" y="1.0" width="300.0""#),
            "{svg}"
        );
        // b: still preparing at 5 s: its wait runs to now.
        assert!(
            svg.contains(r#"<rect class="tl-w" x="500.0" y="11.0" width="500.0""#),
            "{svg}"
        );
        assert!(svg.contains("<title>&lt;b&gt;: running</title>"), "escaped");
        // d failed while preparing: that phase is marked.
        assert!(
            svg.contains(r#"<rect class="tl-w tl-bad" x="100.0" y="31.0" width="200.0""#),
            "{svg}"
        );
        assert_eq!(
            svg.matches("<g>").count(),
            3,
            "no bar for a target not queued"
        );
        assert!(svg.contains(r#"viewBox="0 0 1000 40""#));
        assert!(
            super::svg(&targets[2..3], now).is_none(),
            "nothing queued yet"
        );
    }
}
