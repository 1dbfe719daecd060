//! A service with a `schedule` is a job: each tick of its cron pattern
//! starts a run. `timezone`, `overlap` and `run-on-start` go with it.
//!
//! Patterns are croner's (5 fields, an optional leading seconds field, the
//! `@hourly`-style nicknames); time zones are read by jiff from the
//! system's tzdata. `@reboot` is corral's own: one run at `up`, no ticks.

use std::ops::Range;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::diag::{suggestion, Diagnostics};
use super::interp::Vars;
use super::values::{boolean, string, text, Text, Value};

/// What a tick does when the previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overlap {
    /// Let the run finish; this tick is dropped.
    #[default]
    Skip,
    /// Run again as soon as the current run ends (ticks meanwhile coalesce into one).
    Queue,
    /// Stop the current run (stop-signal, stop-timeout), then start a new one.
    Replace,
}

impl Overlap {
    pub const NAMES: &'static [&'static str] = &["skip", "queue", "replace"];

    pub fn as_str(self) -> &'static str {
        Overlap::NAMES[self as usize]
    }
}

/// A job's schedule, checked at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The pattern as written (what `ps` shows).
    pub schedule: String,
    /// None for `@reboot`: no ticks, only the run at start.
    pub cron: Option<croner::Cron>,
    /// The zone the pattern is read in, and its name as `ps` shows it.
    pub timezone: TimeZone,
    pub timezone_name: String,
    pub overlap: Overlap,
    pub run_on_start: bool,
}

impl Job {
    /// The first tick strictly after `after`; None when there is none
    /// (`@reboot`, or a pattern that never matches again).
    pub fn next_tick(&self, after: Timestamp) -> Option<Timestamp> {
        let cron = self.cron.as_ref()?;
        let start = At {
            secs: after.as_second(),
            tz: self.timezone.clone(),
        };
        let next = cron.find_next_occurrence(&start, false).ok()?;
        Timestamp::from_second(next.secs).ok()
    }

    /// The next `n` ticks after `after` (fewer if the pattern runs out).
    pub fn next_ticks(&self, after: Timestamp, n: usize) -> Vec<Timestamp> {
        std::iter::successors(self.next_tick(after), |&t| self.next_tick(t))
            .take(n)
            .collect()
    }

    /// `at` as a time in the job's zone: `2026-12-08 00:00:00 +01:00`.
    pub fn local_time(&self, at: Timestamp) -> String {
        let offset = i64::from(self.timezone.to_offset(at).seconds());
        let local = at.as_second() + offset;
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let sign = if offset < 0 { '-' } else { '+' };
        let off = offset.abs() / 60;
        format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} {sign}{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60,
            off / 60,
            off % 60
        )
    }
}

/// A whole second in a time zone: what croner searches over.
///
/// croner's own jiff backend works on `Zoned` and its span arithmetic,
/// which links ~150 KB of jiff into corral (its span code and the text of
/// all its errors); this needs only the zone's offsets. croner's trait is
/// made for such backends; the DST rules stay croner's (tests below).
#[derive(Clone)]
struct At {
    /// Seconds since the Unix epoch.
    secs: i64,
    tz: TimeZone,
}

impl At {
    fn offset(&self) -> i64 {
        let ts = Timestamp::from_second(self.secs).unwrap_or(Timestamp::UNIX_EPOCH);
        i64::from(self.tz.to_offset(ts).seconds())
    }
}

impl croner::CronDateTime for At {
    fn to_civil(&self) -> croner::CivilDateTime {
        let local = self.secs + self.offset();
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        let (y, m, d) = civil_from_days(days);
        let hms = (secs / 3600, secs % 3600 / 60, secs % 60);
        croner::CivilDateTime::new(
            croner::CivilDate::from_parts_unchecked(y, m, d),
            croner::CivilTime::from_parts_unchecked(hms.0 as u32, hms.1 as u32, hms.2 as u32),
        )
    }

    fn civil_weekday(&self) -> croner::Weekday {
        let days = (self.secs + self.offset()).div_euclid(86_400);
        // 1970-01-01 was a Thursday (4 days after a Sunday).
        croner::Weekday::from_days_from_sunday((days + 4).rem_euclid(7) as u32)
    }

    fn resolve_civil(
        &self,
        civil: croner::CivilDateTime,
    ) -> Result<croner::Resolution<Self>, croner::errors::CronError> {
        use croner::errors::CronError;
        use jiff::tz::AmbiguousOffset;
        let year = i16::try_from(civil.year()).map_err(|_| CronError::InvalidDate)?;
        let datetime = jiff::civil::DateTime::new(
            year,
            civil.month() as i8,
            civil.day() as i8,
            civil.hour() as i8,
            civil.minute() as i8,
            civil.second() as i8,
            0,
        )
        .map_err(|_| CronError::InvalidDate)?;
        let local = days_from_civil(civil.year(), civil.month(), civil.day()) * 86_400
            + i64::from(civil.hour() * 3600 + civil.minute() * 60 + civil.second());
        let at = |offset: jiff::tz::Offset| At {
            secs: local - i64::from(offset.seconds()),
            tz: self.tz.clone(),
        };
        Ok(match self.tz.to_ambiguous_timestamp(datetime).offset() {
            AmbiguousOffset::Unambiguous { offset } => croner::Resolution::Single(at(offset)),
            // The clock went back: the earlier instant has the offset before.
            AmbiguousOffset::Fold { before, after } => {
                croner::Resolution::Ambiguous(at(before), at(after))
            }
            AmbiguousOffset::Gap { .. } => croner::Resolution::Gap,
        })
    }

    fn checked_add_seconds(&self, seconds: i64) -> Option<Self> {
        Some(At {
            secs: self.secs.checked_add(seconds)?,
            tz: self.tz.clone(),
        })
    }

    fn cmp_instant(&self, other: &Self) -> std::cmp::Ordering {
        self.secs.cmp(&other.secs)
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The job fields of a service table, as read.
#[derive(Default)]
pub struct JobDraft {
    schedule: Option<Text>,
    timezone: Option<Text>,
    overlap: Option<Overlap>,
    run_on_start: Option<bool>,
}

/// Fields that make no sense on a job, with why.
const NOT_FOR_JOBS: [(&str, &str); 9] = [
    (
        "restart",
        "each tick starts a run; a failed run is reported, not restarted",
    ),
    ("backoff", "a job is not restarted"),
    ("max-restarts", "a job is not restarted"),
    ("oneshot", "a job's runs are oneshots already"),
    (
        "essential",
        "a job's run ending is a run result, not the end of corral",
    ),
    (
        "ready",
        "a job has no readiness: depend on it with condition \"completed\"",
    ),
    ("health", "a job has no health probe"),
    ("replicas", "a job runs one process per tick"),
    (
        "provides",
        "a job's runs come and go: provide endpoints from a service",
    ),
];

impl JobDraft {
    pub fn is_set(&self) -> bool {
        self.schedule.is_some()
    }

    pub fn schedule(&mut self, d: &mut Diagnostics<'_>, v: &Value<'_>) {
        self.schedule = text(d, v);
    }

    pub fn timezone(&mut self, d: &mut Diagnostics<'_>, v: &Value<'_>) {
        self.timezone = text(d, v);
    }

    pub fn overlap(&mut self, d: &mut Diagnostics<'_>, v: &Value<'_>) {
        self.overlap = overlap(d, v);
    }

    pub fn run_on_start(&mut self, d: &mut Diagnostics<'_>, v: &Value<'_>) {
        self.run_on_start = boolean(d, v);
    }

    /// The job, if the table has a schedule; errors for fields that do not
    /// go with it (or job fields without a schedule).
    /// `${VAR}`s in the schedule and the zone come from corral's environment.
    pub fn finish(
        &self,
        d: &mut Diagnostics<'_>,
        table: &toml::de::DeTable<'_>,
        service: &str,
        vars: &dyn Vars,
    ) -> Option<Job> {
        let Some(schedule_text) = &self.schedule else {
            for key in ["timezone", "overlap", "run-on-start"] {
                if let Some((k, _)) = table.get_key_value(key) {
                    d.error(
                        k.span(),
                        format!(
                            "{key} applies only to a job: service {service:?} has no `schedule`"
                        ),
                    );
                }
            }
            return None;
        };
        for (key, why) in NOT_FOR_JOBS {
            if let Some((k, _)) = table.get_key_value(key) {
                d.error(
                    k.span(),
                    format!("service {service:?} is a job (it has a schedule): {key} does not apply; {why}"),
                );
            }
        }
        let schedule = schedule_text.expand(d, vars)?;
        let cron = parse_schedule(d, &schedule, schedule_text.span.clone());
        let zone = match &self.timezone {
            // (jiff's error text is not shown: printing it links every
            // message of jiff into corral, ~90 KB.)
            Some(zone) => match zone.expand(d, vars) {
                None => None,
                Some(name) => match TimeZone::get(&name) {
                    Ok(tz) => Some((tz, name)),
                    Err(_) => {
                        d.error(
                            zone.span.clone(),
                            format!("unknown time zone {name:?}: not in the system's tzdata (/usr/share/zoneinfo)"),
                        );
                        None
                    }
                },
            },
            None => Some(host_timezone()),
        };
        let (cron, (timezone, timezone_name)) = (cron?, zone?);
        let job = Job {
            schedule,
            // `@reboot` is a run at start and nothing else.
            run_on_start: self.run_on_start.unwrap_or(false) || cron.is_none(),
            cron,
            timezone,
            timezone_name,
            overlap: self.overlap.unwrap_or_default(),
        };
        // A pattern the parser takes but no time matches (`0 12 31 2 *`)
        // would pass `check` and then never run.
        if job.cron.is_some() && job.next_tick(Timestamp::now()).is_none() {
            d.error(
                schedule_text.span.clone(),
                format!(
                    "the schedule {:?} never runs: no time matches it",
                    job.schedule
                ),
            );
            return None;
        }
        Some(job)
    }
}

/// Some(None) for `@reboot`; Some(Some(cron)) for a pattern; None (and an
/// error) for a pattern croner refuses.
fn parse_schedule(
    d: &mut Diagnostics<'_>,
    schedule: &str,
    span: Range<usize>,
) -> Option<Option<croner::Cron>> {
    let text = schedule.trim();
    if text.eq_ignore_ascii_case("@reboot") {
        return Some(None);
    }
    // cron's other name for @daily, as Vixie cron and the docs have it.
    let text = if text.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        text
    };
    let parsed = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text);
    match parsed {
        Ok(cron) => Some(Some(cron)),
        Err(e) => {
            d.error(
                span,
                format!(
                    "invalid schedule {schedule:?}: {e} (expected 5 cron fields, an optional \
                     seconds field first, or @hourly, @daily (@midnight), @weekly, @monthly, \
                     @yearly (@annually), @reboot)"
                ),
            );
            None
        }
    }
}

/// The host's zone (TZ, else /etc/localtime), UTC when it has none.
fn host_timezone() -> (TimeZone, String) {
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    let name = tz.iana_name().unwrap_or("local").to_string();
    (tz, name)
}

fn overlap(d: &mut Diagnostics<'_>, v: &Value<'_>) -> Option<Overlap> {
    let s = string(d, v)?;
    match Overlap::NAMES.iter().position(|n| *n == s) {
        Some(0) => Some(Overlap::Skip),
        Some(1) => Some(Overlap::Queue),
        Some(_) => Some(Overlap::Replace),
        None => {
            d.error(
                v.span(),
                format!(
                    "unknown overlap {s:?}: expected one of {}{}",
                    Overlap::NAMES.join(", "),
                    suggestion(s, Overlap::NAMES.iter().copied())
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn job(schedule: &str, zone: &str) -> Job {
        Job {
            schedule: schedule.into(),
            cron: Some(
                croner::parser::CronParser::builder()
                    .seconds(croner::parser::Seconds::Optional)
                    .build()
                    .parse(schedule)
                    .unwrap(),
            ),
            timezone: TimeZone::get(zone).expect("tzdata has the zone"),
            timezone_name: zone.into(),
            overlap: Overlap::Skip,
            run_on_start: false,
        }
    }

    fn at(utc: &str) -> Timestamp {
        utc.parse().unwrap()
    }

    /// croner's documented DST rules, pinned (Europe/Paris, 2026: clocks go
    /// 02:00 -> 03:00 on 29 March and 03:00 -> 02:00 on 25 October).
    #[test]
    fn dst_gap_and_repeat_follow_croner() {
        // A fixed time inside the gap runs at the first valid time after it,
        // the same day: 03:00 CEST is 01:00 UTC.
        let daily = job("30 2 * * *", "Europe/Paris");
        let tick = daily.next_tick(at("2026-03-28T23:00:00Z")).unwrap();
        assert_eq!(tick, at("2026-03-29T01:00:00Z"));
        // A fixed time in the repeated hour runs once, at its first pass
        // (02:30 CEST = 00:30 UTC), not again at 02:30 CET.
        let first = daily.next_tick(at("2026-10-24T23:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        let after = daily.next_tick(first).unwrap();
        assert_eq!(after, at("2026-10-26T01:30:00Z"));
        // A wildcard hour runs in both passes of the repeated hour.
        let half_hourly = job("30 * * * *", "Europe/Paris");
        let a = half_hourly.next_tick(at("2026-10-25T00:00:00Z")).unwrap();
        let b = half_hourly.next_tick(a).unwrap();
        assert_eq!(
            (a, b),
            (at("2026-10-25T00:30:00Z"), at("2026-10-25T01:30:00Z"))
        );
    }

    #[test]
    fn weekdays_are_read_in_the_zone() {
        // Thursday 26 November 2026 -> Monday 30th.
        let monday = job("0 0 * * MON", "UTC");
        assert_eq!(
            monday.next_tick(at("2026-11-26T12:00:00Z")),
            Some(at("2026-11-30T00:00:00Z"))
        );
        // 22:00 UTC on Saturday is 23:00 in Paris: Sunday 00:30 there comes
        // 90 minutes later, while it is still Saturday in UTC.
        let sunday = job("30 0 * * SUN", "Europe/Paris");
        assert_eq!(
            sunday.next_tick(at("2026-11-28T22:00:00Z")),
            Some(at("2026-11-28T23:30:00Z"))
        );
        let last_day = job("0 12 L * *", "UTC");
        assert_eq!(
            last_day.next_tick(at("2028-02-01T00:00:00Z")),
            Some(at("2028-02-29T12:00:00Z"))
        );
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-719_468, -1, 0, 1, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    /// A pattern as a config gives it (nicknames included), in UTC.
    fn parsed(schedule: &str) -> Job {
        let path = std::path::Path::new("corral.toml");
        let mut d = Diagnostics::new(path, schedule);
        let cron = parse_schedule(&mut d, schedule, 0..schedule.len())
            .unwrap_or_else(|| panic!("{schedule:?} does not parse"));
        Job {
            cron,
            ..job("* * * * *", "UTC")
        }
    }

    /// Next times as cron users expect them, from the cases cron libraries
    /// test (croner, robfig/cron, Vixie cron's man page): steps, ranges,
    /// lists, weekday names and 7 for Sunday, leap days, the last day,
    /// nicknames, and day-of-month OR day-of-week when both are set
    /// (Vixie cron's rule, which croner and robfig follow).
    #[test]
    fn next_times_as_cron_has_them() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "0 0 * * *",
                "2026-03-10T12:00:00Z",
                &["2026-03-11T00:00:00Z", "2026-03-12T00:00:00Z"],
            ),
            (
                "*/15 * * * *",
                "2026-03-10T12:07:30Z",
                &["2026-03-10T12:15:00Z", "2026-03-10T12:30:00Z"],
            ),
            (
                "5-10/2 * * * *",
                "2026-03-10T12:06:00Z",
                &[
                    "2026-03-10T12:07:00Z",
                    "2026-03-10T12:09:00Z",
                    "2026-03-10T13:05:00Z",
                ],
            ),
            (
                "0 9 * * 1-5",
                "2026-03-14T10:00:00Z",
                &["2026-03-16T09:00:00Z", "2026-03-17T09:00:00Z"],
            ),
            (
                "0 9 * * MON-FRI",
                "2026-03-13T10:00:00Z",
                &["2026-03-16T09:00:00Z"],
            ),
            (
                "0 0 * * 7",
                "2026-03-10T00:00:00Z",
                &["2026-03-15T00:00:00Z"],
            ),
            (
                "0 0 * * SUN",
                "2026-03-10T00:00:00Z",
                &["2026-03-15T00:00:00Z"],
            ),
            (
                "0 0 29 2 *",
                "2026-03-01T00:00:00Z",
                &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            ),
            (
                "0 0 31 * *",
                "2026-04-01T00:00:00Z",
                &["2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"],
            ),
            (
                "0 12 L 2 *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-02-28T12:00:00Z",
                    "2027-02-28T12:00:00Z",
                    "2028-02-29T12:00:00Z",
                ],
            ),
            (
                "0 0 1,15 * WED",
                "2026-03-02T00:00:00Z",
                &[
                    "2026-03-04T00:00:00Z",
                    "2026-03-11T00:00:00Z",
                    "2026-03-15T00:00:00Z",
                ],
            ),
            (
                "30 4 1 JAN,JUL *",
                "2026-03-02T00:00:00Z",
                &["2026-07-01T04:30:00Z", "2027-01-01T04:30:00Z"],
            ),
            ("@yearly", "2026-03-02T00:00:00Z", &["2027-01-01T00:00:00Z"]),
            (
                "@annually",
                "2026-03-02T00:00:00Z",
                &["2027-01-01T00:00:00Z"],
            ),
            (
                "@monthly",
                "2026-03-02T00:00:00Z",
                &["2026-04-01T00:00:00Z"],
            ),
            ("@weekly", "2026-03-10T00:00:00Z", &["2026-03-15T00:00:00Z"]),
            ("@daily", "2026-03-10T08:00:00Z", &["2026-03-11T00:00:00Z"]),
            (
                "@midnight",
                "2026-03-10T08:00:00Z",
                &["2026-03-11T00:00:00Z"],
            ),
            ("@hourly", "2026-03-10T08:59:59Z", &["2026-03-10T09:00:00Z"]),
            (
                "15 * * * * *",
                "2026-03-10T08:00:20Z",
                &["2026-03-10T08:01:15Z"],
            ),
        ];
        for (schedule, after, want) in cases {
            let got = parsed(schedule).next_ticks(at(after), want.len());
            let want: Vec<Timestamp> = want.iter().map(|w| at(w)).collect();
            assert_eq!(got, want, "{schedule} after {after}");
        }
    }

    #[test]
    fn times_are_shown_in_the_zone() {
        let paris = job("0 0 * * *", "Europe/Paris");
        let runs = paris.next_ticks(at("2026-03-27T12:00:00Z"), 3);
        let shown: Vec<String> = runs.iter().map(|&t| paris.local_time(t)).collect();
        assert_eq!(
            shown,
            [
                "2026-03-28 00:00:00 +01:00",
                "2026-03-29 00:00:00 +01:00",
                "2026-03-30 00:00:00 +02:00"
            ]
        );
        let ny = job("0 0 * * *", "America/New_York");
        assert_eq!(
            ny.local_time(at("2026-01-01T05:00:00Z")),
            "2026-01-01 00:00:00 -05:00"
        );
    }

    #[test]
    fn seconds_field_and_nicknames() {
        let every2 = job("*/2 * * * * *", "UTC");
        assert_eq!(
            every2.next_tick(at("2026-01-01T00:00:00.5Z")),
            Some(at("2026-01-01T00:00:02Z"))
        );
        let hourly = job("@hourly", "UTC");
        assert_eq!(
            hourly.next_tick(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        let reboot = Job {
            cron: None,
            ..job("@hourly", "UTC")
        };
        assert_eq!(reboot.next_tick(at("2026-01-01T00:00:00Z")), None);
    }
}
