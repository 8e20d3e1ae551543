//! Maintenance windows: when the targets of an environment (or of one DB
//! set, which may override its environment's) may be migrated.
//!
//! The grammar, documented in docs/Requirements.md:
//!
//! ```text
//! schedule := "always" | window { ";" window }
//! window   := days start "-" end zone
//! days     := "daily" | span { "," span }
//! span     := day [ "-" day ]      Mon Tue Wed Thu Fri Sat Sun (any case); Fri-Mon wraps
//! start    := HH:MM                00:00 to 23:59
//! end      := HH:MM                00:00 to 24:00; at or before the start: the next day
//! zone     := an IANA time zone    Europe/Berlin, America/New_York, UTC
//! ```
//!
//! `Mon-Fri 02:00-05:00 Europe/Berlin` opens each weekday at 02:00 Berlin
//! time for three hours; `Fri 22:00-02:00 UTC` crosses midnight;
//! `Sat,Sun 00:00-24:00 UTC; Mon-Fri 01:00-04:00 UTC` joins two windows.
//! Windows that touch or overlap are one: the weekend above is open from
//! Saturday 00:00 to Monday 04:00. Times are wall-clock times of the zone,
//! so a window follows daylight saving time; a start that does not exist
//! that day (the hour clocks skip) is the first moment after it.

use std::fmt;

use jiff::{Timestamp, civil::Date, tz::TimeZone};
use time::OffsetDateTime;

/// A schedule of maintenance windows; without any window, always open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

/// One recurring window.
#[derive(Debug, Clone)]
struct Window {
    /// Monday first.
    days: [bool; 7],
    /// Minutes after midnight, 0..1440.
    start: u16,
    /// Minutes after midnight, 0..=1440; at or before `start`: the next day.
    end: u16,
    zone_name: String,
    zone: TimeZone,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (self.days, self.start, self.end, &self.zone_name)
            == (other.days, other.start, other.end, &other.zone_name)
    }
}

impl Eq for Window {}

/// Where a moment falls in a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Migrations may run; until `closes_at` (`None`: the schedule is
    /// always open).
    Open { closes_at: Option<OffsetDateTime> },
    /// Nothing starts before `opens_at`.
    Closed { opens_at: OffsetDateTime },
}

/// A schedule that does not follow the grammar, with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowError(String);

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;
/// The days looked at around a moment: one back (a window of yesterday that
/// crosses midnight), eight ahead (every weekday at least once after today).
const DAYS_BACK: i64 = 1;
const DAYS_AHEAD: i64 = 8;
/// Longest accepted schedule text.
pub const MAX_LEN: usize = 500;

impl Schedule {
    /// No window: migrations may run at any time.
    pub fn always() -> Self {
        Self {
            windows: Vec::new(),
        }
    }

    pub fn is_always(&self) -> bool {
        self.windows.is_empty()
    }

    /// Parses a schedule (see the module's grammar). `always` and an empty
    /// text are the schedule without windows.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let text = text.trim();
        if text.len() > MAX_LEN {
            return Err(WindowError(format!(
                "a schedule has at most {MAX_LEN} characters"
            )));
        }
        if text.is_empty() || text.eq_ignore_ascii_case("always") {
            return Ok(Self::always());
        }
        let windows = text
            .split(';')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(Window::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = Self { windows };
        // The canonical text may be longer than what was typed (`Fri-Mon`).
        if schedule.to_string().len() > MAX_LEN {
            return Err(WindowError(format!(
                "a schedule has at most {MAX_LEN} characters"
            )));
        }
        Ok(schedule)
    }

    /// The schedule in force: the DB set's own when it has one, else its
    /// environment's; no text at all means no window.
    pub fn effective(environment: Option<&str>, db_set: Option<&str>) -> Result<Self, WindowError> {
        Self::parse(db_set.or(environment).unwrap_or_default())
    }

    /// Where `at` falls: in a window (and when it closes) or outside (and
    /// when the next one opens).
    pub fn state_at(&self, at: OffsetDateTime) -> WindowState {
        if self.is_always() {
            return WindowState::Open { closes_at: None };
        }
        let now = to_timestamp(at);
        let spans = self.spans_around(now);
        let horizon = spans.iter().map(|s| s.1).max();
        if let Some(&(_, end)) = spans.iter().find(|(s, e)| *s <= now && now < *e) {
            // Open up to the end of what was looked at: open for good.
            let closes_at = (Some(end) != horizon).then(|| to_offset(end));
            return WindowState::Open { closes_at };
        }
        match spans.iter().find(|(s, _)| *s > now) {
            Some(&(start, _)) => WindowState::Closed {
                opens_at: to_offset(start),
            },
            // Only a window that the clocks skip every time could do this;
            // look again a day later.
            None => WindowState::Closed {
                opens_at: at + time::Duration::days(1),
            },
        }
    }

    /// When something due at `at` may start: `at` itself inside a window,
    /// else the next window's opening.
    pub fn next_start(&self, at: OffsetDateTime) -> OffsetDateTime {
        match self.state_at(at) {
            WindowState::Open { .. } => at,
            WindowState::Closed { opens_at } => opens_at,
        }
    }

    /// `at` as a wall-clock time of the schedule's first zone, for people:
    /// `Mon 2026-12-07 02:00 Europe/Berlin`.
    pub fn local_time(&self, at: OffsetDateTime) -> String {
        let Some(window) = self.windows.first() else {
            return to_timestamp(at)
                .strftime("%a %Y-%m-%d %H:%M UTC")
                .to_string();
        };
        let local = to_timestamp(at).to_zoned_datetime(window.zone.clone());
        format!(
            "{} {}",
            local.strftime("%a %Y-%m-%d %H:%M"),
            window.zone_name
        )
    }

    /// Every window's occurrences on the days around `now`, as `[start, end)`
    /// instants, sorted, touching or overlapping ones joined.
    fn spans_around(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let mut spans: Vec<(Timestamp, Timestamp)> = self
            .windows
            .iter()
            .flat_map(|w| w.occurrences_around(now))
            .collect();
        spans.sort();
        let mut joined: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match joined.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => joined.push((start, end)),
            }
        }
        joined
    }
}

impl fmt::Display for Schedule {
    /// The canonical text: what `parse` reads back to the same schedule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_always() {
            return f.write_str("always");
        }
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} {}-{} {}",
                days_text(&w.days),
                clock(w.start),
                clock(w.end),
                w.zone_name
            )?;
        }
        Ok(())
    }
}

impl Window {
    fn parse(text: &str) -> Result<Self, WindowError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [days @ .., times, zone] = words.as_slice() else {
            return Err(WindowError(format!(
                "`{text}`: a window is days, times and a time zone, e.g. \
                 `Mon-Fri 02:00-05:00 Europe/Berlin`"
            )));
        };
        if zone.contains(':') {
            return Err(WindowError(format!(
                "`{text}`: a window ends with its time zone, e.g. \
                 `Mon-Fri 02:00-05:00 Europe/Berlin` or `… UTC`"
            )));
        }
        if days.is_empty() {
            return Err(WindowError(format!(
                "`{text}`: name the days first, e.g. `Mon-Fri` or `daily`"
            )));
        }
        // `Mon, Wed` reads as `Mon,Wed`.
        let days = parse_days(&days.concat())?;
        let (start, end) = times
            .split_once('-')
            .ok_or_else(|| WindowError(format!("`{times}`: times are `HH:MM-HH:MM`")))?;
        let (start, end) = (parse_clock(start, false)?, parse_clock(end, true)?);
        if start == end {
            return Err(WindowError(format!(
                "`{times}`: a window must not start and end at the same time \
                 (a whole day is `00:00-24:00`)"
            )));
        }
        let zone = TimeZone::get(zone).map_err(|_| {
            WindowError(format!(
                "`{zone}`: unknown time zone (use an IANA name such as Europe/Berlin or UTC)"
            ))
        })?;
        let zone_name = zone
            .iana_name()
            .unwrap_or(words[words.len() - 1])
            .to_owned();
        Ok(Self {
            days,
            start,
            end,
            zone_name,
            zone,
        })
    }

    /// This window's `[start, end)` instants on the days around `now`.
    fn occurrences_around(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned_datetime(self.zone.clone()).date();
        (-DAYS_BACK..=DAYS_AHEAD)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter(|day| self.days[day.weekday().to_monday_zero_offset() as usize])
            .filter_map(|day| {
                let start = self.instant(day, self.start)?;
                let end_day = if self.end <= self.start {
                    day.tomorrow().ok()?
                } else {
                    day
                };
                let end = self.instant(end_day, self.end)?;
                (start < end).then_some((start, end))
            })
            .collect()
    }

    /// The instant of `minutes` after midnight of `day` in the zone (24:00
    /// is the next day's midnight).
    fn instant(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let (day, minutes) = if minutes == MINUTES_PER_DAY {
            (day.tomorrow().ok()?, 0)
        } else {
            (day, minutes)
        };
        let (hour, minute) = ((minutes / 60) as i8, (minutes % 60) as i8);
        day.at(hour, minute, 0, 0)
            .to_zoned_datetime(self.zone.clone())
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], WindowError> {
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    let mut days = [false; 7];
    for span in text.split(',') {
        let (first, last) = match span.split_once('-') {
            Some((a, b)) => (day_index(a)?, day_index(b)?),
            None => (day_index(span)?, day_index(span)?),
        };
        let mut day = first;
        loop {
            days[day] = true;
            if day == last {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    Ok(days)
}

fn day_index(name: &str) -> Result<usize, WindowError> {
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            WindowError(format!(
                "`{name}`: unknown day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, spans such as \
                 Mon-Fri, or daily)"
            ))
        })
}

/// `HH:MM` as minutes after midnight; `24:00` only as an end.
fn parse_clock(text: &str, is_end: bool) -> Result<u16, WindowError> {
    let bad = || {
        WindowError(format!(
            "`{text}`: a time is HH:MM between 00:00 and {}",
            if is_end { "24:00" } else { "23:59" }
        ))
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let minutes = h * 60 + m;
    match (h, m) {
        (24, 0) if is_end => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(minutes),
        _ => Err(bad()),
    }
}

fn clock(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `daily`, or runs of three days or more as spans (`Mon-Fri`), the rest
/// listed (`Sat,Sun`), Monday first.
fn days_text(days: &[bool; 7]) -> String {
    if days.iter().all(|d| *d) {
        return "daily".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if !days[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < 7 && days[i + 1] {
            i += 1;
        }
        if i - start >= 2 {
            parts.push(format!("{}-{}", DAYS[start], DAYS[i]));
        } else {
            parts.extend((start..=i).map(|d| DAYS[d].to_owned()));
        }
        i += 1;
    }
    parts.join(",")
}

fn to_timestamp(at: OffsetDateTime) -> Timestamp {
    Timestamp::from_nanosecond(at.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn to_offset(at: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(at.as_nanosecond())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn open_until(at: OffsetDateTime) -> WindowState {
        WindowState::Open {
            closes_at: Some(at),
        }
    }

    fn closed_until(at: OffsetDateTime) -> WindowState {
        WindowState::Closed { opens_at: at }
    }

    #[test]
    fn weekday_mornings_in_berlin() {
        let s = Schedule::parse("Mon-Fri 02:00-05:00 Europe/Berlin").unwrap();
        // 2026-12-07 is a Monday; Berlin is UTC+1 in winter.
        assert_eq!(
            s.state_at(datetime!(2026-12-07 01:30 UTC)),
            open_until(datetime!(2026-12-07 04:00 UTC))
        );
        assert_eq!(
            s.state_at(datetime!(2026-12-07 00:59:59 UTC)),
            closed_until(datetime!(2026-12-07 01:00 UTC))
        );
        // The end is not in the window.
        assert_eq!(
            s.state_at(datetime!(2026-12-07 04:00 UTC)),
            closed_until(datetime!(2026-12-08 01:00 UTC))
        );
        // Friday after the window: Monday's.
        assert_eq!(
            s.state_at(datetime!(2026-12-11 12:00 UTC)),
            closed_until(datetime!(2026-12-14 01:00 UTC))
        );
        // Summer time: UTC+2.
        assert_eq!(
            s.state_at(datetime!(2026-07-06 00:30 UTC)),
            open_until(datetime!(2026-07-06 03:00 UTC))
        );
    }

    #[test]
    fn a_window_across_midnight_belongs_to_its_first_day() {
        let s = Schedule::parse("Fri 22:00-02:00 UTC").unwrap();
        // Saturday 01:00 is still Friday's window.
        assert_eq!(
            s.state_at(datetime!(2026-12-12 01:00 UTC)),
            open_until(datetime!(2026-12-12 02:00 UTC))
        );
        // Sunday 01:00 is not (no Saturday window).
        assert_eq!(
            s.state_at(datetime!(2026-12-13 01:00 UTC)),
            closed_until(datetime!(2026-12-18 22:00 UTC))
        );
    }

    #[test]
    fn touching_windows_are_one() {
        let s = Schedule::parse("Sat,Sun 00:00-24:00 UTC; Mon-Fri 00:00-04:00 UTC").unwrap();
        assert_eq!(
            s.state_at(datetime!(2026-12-12 10:00 UTC)),
            open_until(datetime!(2026-12-14 04:00 UTC))
        );
    }

    #[test]
    fn a_window_that_never_closes_is_open_for_good() {
        for text in ["daily 00:00-24:00 UTC", "always", "", "  ALWAYS "] {
            let s = Schedule::parse(text).unwrap();
            assert_eq!(
                s.state_at(datetime!(2026-12-12 10:00 UTC)),
                WindowState::Open { closes_at: None },
                "{text}"
            );
        }
        assert!(Schedule::parse("always").unwrap().is_always());
    }

    #[test]
    fn daylight_saving_moves_the_instant_not_the_wall_clock() {
        // Berlin springs forward on 2027-03-28 at 02:00 → 03:00.
        let s = Schedule::parse("daily 02:30-04:00 Europe/Berlin").unwrap();
        // The skipped 02:30 is the first moment after the gap: 03:30 CEST = 01:30 UTC.
        assert_eq!(
            s.state_at(datetime!(2027-03-28 00:00 UTC)),
            closed_until(datetime!(2027-03-28 01:30 UTC))
        );
        // The day before: 02:30 CET = 01:30 UTC; after: 02:30 CEST = 00:30 UTC.
        assert_eq!(
            s.state_at(datetime!(2027-03-27 00:00 UTC)),
            closed_until(datetime!(2027-03-27 01:30 UTC))
        );
        assert_eq!(
            s.state_at(datetime!(2027-03-29 00:00 UTC)),
            closed_until(datetime!(2027-03-29 00:30 UTC))
        );
    }

    #[test]
    fn next_start_is_now_inside_a_window() {
        let s = Schedule::parse("Mon-Fri 02:00-05:00 UTC").unwrap();
        let inside = datetime!(2026-12-07 03:00 UTC);
        assert_eq!(s.next_start(inside), inside);
        assert_eq!(
            s.next_start(datetime!(2026-12-07 06:00 UTC)),
            datetime!(2026-12-08 02:00 UTC)
        );
    }

    #[test]
    fn the_canonical_text_reads_back_the_same() {
        for (text, canonical) in [
            (
                "mon-fri 02:00-05:00 Europe/Berlin",
                "Mon-Fri 02:00-05:00 Europe/Berlin",
            ),
            ("Sat, Sun 00:00-24:00 UTC", "Sat,Sun 00:00-24:00 UTC"),
            ("Fri-Mon 22:00-02:00 UTC", "Mon,Fri-Sun 22:00-02:00 UTC"),
            (
                "Mon-Sun 01:00-02:00 UTC;Tue 03:00-04:00 America/New_York",
                "daily 01:00-02:00 UTC; Tue 03:00-04:00 America/New_York",
            ),
            ("always", "always"),
        ] {
            let s = Schedule::parse(text).unwrap();
            assert_eq!(s.to_string(), canonical, "{text}");
            assert_eq!(Schedule::parse(canonical).unwrap(), s, "{canonical}");
        }
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("Mon-Fry 02:00-05:00 UTC", "`Fry`: unknown day"),
            ("Mon-Fri 02:00 UTC", "`02:00`: times are"),
            ("Mon-Fri 2:00-05:00 UTC", "`2:00`: a time is HH:MM"),
            ("Mon-Fri 02:00-24:01 UTC", "`24:01`"),
            (
                "Mon-Fri 24:00-05:00 UTC",
                "`24:00`: a time is HH:MM between 00:00 and 23:59",
            ),
            (
                "Mon-Fri 02:00-05:00 Mars/Olympus",
                "`Mars/Olympus`: unknown time zone",
            ),
            ("Mon-Fri 02:00-05:00", "a window ends with its time zone"),
            ("UTC", "a window is days, times and a time zone"),
            ("02:00-05:00 UTC", "name the days first"),
            (
                "Mon 02:00-02:00 UTC",
                "must not start and end at the same time",
            ),
        ] {
            let err = Schedule::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert!(Schedule::parse(&"daily 01:00-02:00 UTC;".repeat(30)).is_err());
        // 490 characters typed, longer once canonical.
        assert!(Schedule::parse(&"Fri-Mon 01:00-02:00 UTC;".repeat(20)).is_err());
        // Zone names are names, never paths.
        for zone in ["../../../etc/passwd", "/etc/localtime", "Europe/../UTC"] {
            let text = format!("daily 01:00-02:00 {zone}");
            assert!(Schedule::parse(&text).is_err(), "{zone}");
        }
    }

    #[test]
    fn the_db_set_overrides_its_environment() {
        let env = Some("Mon-Fri 02:00-05:00 UTC");
        assert!(!Schedule::effective(env, None).unwrap().is_always());
        assert!(
            Schedule::effective(env, Some("always"))
                .unwrap()
                .is_always()
        );
        assert!(Schedule::effective(None, None).unwrap().is_always());
        assert_eq!(
            Schedule::effective(None, Some("Sat 01:00-02:00 UTC"))
                .unwrap()
                .to_string(),
            "Sat 01:00-02:00 UTC"
        );
    }

    #[test]
    fn local_times_name_the_zone() {
        let s = Schedule::parse("Mon-Fri 02:00-05:00 Europe/Berlin").unwrap();
        assert_eq!(
            s.local_time(datetime!(2026-12-07 01:00 UTC)),
            "Mon 2026-12-07 02:00 Europe/Berlin"
        );
    }
}
