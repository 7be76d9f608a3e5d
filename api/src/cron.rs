//! CronJob schedules: the standard five-field cron syntax and the `@`
//! descriptors, as Kubernetes reads them (robfig/cron's `ParseStandard`),
//! and the next time a schedule fires in a time zone.
//!
//! ```text
//!  "*/15 9-17 * JAN-JUN mon-fri"   minute hour day-of-month month day-of-week
//!     each field: * | ? | N | N-M | name | any of those /STEP, comma-separated lists
//!  @yearly @annually @monthly @weekly @daily @midnight @hourly   @every 1h30m
//! ```
//!
//! Day-of-month and day-of-week: when either is `*` (or `?`) both must match,
//! otherwise either may (as in Vixie cron). `next_after` walks the fields the
//! way robfig/cron does in the zone's wall-clock time, so daylight-saving
//! days behave as upstream: a time skipped by the clock going forward does
//! not run that day, an hour repeated by the clock going back can run twice.
//!
//! Pure: the registry validates `spec.schedule` / `spec.timeZone` with it and
//! the CronJob controller computes its start times with it.

use jiff::civil::date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// Why a schedule or time zone was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fields(Fields),
    /// `@every <duration>`: a constant delay, whole seconds, at least one.
    Every(u64),
}

/// One bit per allowed value; `star` when the field was `*` or `?`
/// (a stepped `*/2` is not a star, as upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
/// Names start at `min`: jan is 1.
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// Sunday is 0 (7 is refused, as upstream).
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// How far ahead `next_after` looks before deciding a schedule never fires
/// (robfig's limit: "0 0 30 2 *" is well-formed but never happens).
const YEARS_AHEAD: i16 = 5;

fn bad(msg: impl Into<String>) -> CronError {
    CronError(msg.into())
}

fn number_or_name(s: &str, b: &Bounds, expr: &str) -> Result<u32, CronError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(b.min + i as u32);
    }
    number(s, b, expr)
}

fn number(s: &str, b: &Bounds, expr: &str) -> Result<u32, CronError> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        let what = if s.starts_with('-') {
            "negative numbers are not allowed".to_string()
        } else if b.names.is_empty() {
            format!("{s:?} is not a number")
        } else {
            format!("{s:?} is neither a number nor a {} name", b.name)
        };
        return Err(bad(format!("{} field {expr:?}: {what}", b.name)));
    }
    s.parse()
        .map_err(|_| bad(format!("{} field {expr:?}: {s} is too large", b.name)))
}

/// One comma-separated part of a field: the bits it sets and whether it
/// was a plain `*`/`?`.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let (span, step) = match expr.split_once('/') {
        None => (expr, None),
        Some((span, step)) => {
            if step.contains('/') {
                return Err(bad(format!("{} field {expr:?}: too many slashes", b.name)));
            }
            (span, Some(number(step, b, expr)?))
        }
    };
    let (mut star, start, mut end);
    if span == "*" || span == "?" {
        (star, start, end) = (true, b.min, b.max);
    } else {
        star = false;
        let mut ends = span.split('-');
        let lo = ends.next().unwrap_or_default();
        start = number_or_name(lo, b, expr)?;
        end = match (ends.next(), ends.next()) {
            (None, _) => start,
            (Some(hi), None) => number_or_name(hi, b, expr)?,
            (Some(_), Some(_)) => {
                return Err(bad(format!("{} field {expr:?}: too many hyphens", b.name)))
            }
        };
        // "N/step" means "N-max/step".
        if step.is_some() && !span.contains('-') {
            end = b.max;
        }
    }
    let step = step.unwrap_or(1);
    if step > 1 {
        star = false;
    }
    if start < b.min {
        return Err(bad(format!(
            "{} field {expr:?}: {start} is below the minimum {}",
            b.name, b.min
        )));
    }
    if end > b.max {
        return Err(bad(format!(
            "{} field {expr:?}: {end} is above the maximum {}",
            b.name, b.max
        )));
    }
    if start > end {
        return Err(bad(format!(
            "{} field {expr:?}: the range starts at {start}, after its end {end}",
            b.name
        )));
    }
    if step == 0 {
        return Err(bad(format!(
            "{} field {expr:?}: the step must be a positive number",
            b.name
        )));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

fn field(expr: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut star = false;
    for part in expr.split(',') {
        if part.is_empty() {
            return Err(bad(format!(
                "{} field {expr:?}: an empty list item",
                b.name
            )));
        }
        let (b2, s) = range(part, b)?;
        bits |= b2;
        star |= s;
    }
    Ok((bits, star))
}

fn descriptor(s: &str) -> Result<Schedule, CronError> {
    let five = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            if let Some(d) = s.strip_prefix("@every ") {
                let d = humantime::parse_duration(d.trim())
                    .map_err(|e| bad(format!("{s:?}: not a duration: {e}")))?;
                return Ok(Schedule(Kind::Every(d.as_secs().max(1))));
            }
            return Err(bad(format!(
                "unrecognized descriptor {s:?} (expected @yearly, @annually, @monthly, \
                 @weekly, @daily, @midnight, @hourly or @every <duration>)"
            )));
        }
    };
    Schedule::parse(five)
}

impl Schedule {
    /// Parses a schedule as `spec.schedule` carries it.
    pub fn parse(spec: &str) -> Result<Self, CronError> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(bad("the schedule is empty"));
        }
        if s.starts_with('@') {
            return descriptor(s);
        }
        let parts: Vec<&str> = s.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(bad(format!(
                "expected exactly 5 fields (minute hour day-of-month month day-of-week), found {}",
                parts.len()
            )));
        }
        let (minute, _) = field(parts[0], &MINUTE)?;
        let (hour, _) = field(parts[1], &HOUR)?;
        let (dom, dom_star) = field(parts[2], &DOM)?;
        let (month, _) = field(parts[3], &MONTH)?;
        let (dow, dow_star) = field(parts[4], &DOW)?;
        Ok(Schedule(Kind::Fields(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })))
    }

    /// The first time strictly after `t` that the schedule fires, read in
    /// `tz`'s wall-clock time; None if it never does within five years.
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.0 {
            Kind::Every(secs) => {
                let whole = Timestamp::from_second(t.as_second()).ok()?;
                whole.checked_add((*secs as i64).seconds()).ok()
            }
            Kind::Fields(f) => f.next_after(t, tz),
        }
    }
}

fn has(bits: u64, v: i64) -> bool {
    (0..64).contains(&v) && bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, z: &Zoned) -> bool {
        let dom = has(self.dom, z.day() as i64);
        let dow = has(self.dow, z.weekday().to_sunday_zero_offset() as i64);
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// robfig/cron's SpecSchedule.Next: move through months, days, hours
    /// and minutes of the wall clock, starting over from the month when a
    /// field wraps. Days move in calendar time, hours and minutes in
    /// absolute time (hence the daylight-saving behaviour above).
    fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let minute = Timestamp::from_second(t.as_second().div_euclid(60) * 60).ok()?;
        let mut z = minute.checked_add(1.minute()).ok()?.to_zoned(tz.clone());
        let limit = z.year().checked_add(YEARS_AHEAD)?;
        let mut added = false;
        'wrap: loop {
            if z.year() > limit {
                return None;
            }
            while !has(self.month, z.month() as i64) {
                if !added {
                    added = true;
                    z = date(z.year(), z.month(), 1).to_zoned(tz.clone()).ok()?;
                }
                z = z.checked_add(1.month()).ok()?;
                if z.month() == 1 {
                    continue 'wrap;
                }
            }
            while !self.day_matches(&z) {
                if !added {
                    added = true;
                    z = z.date().to_zoned(tz.clone()).ok()?;
                }
                z = z.checked_add(1.day()).ok()?;
                // A day that starts at 01:00 (a zone that moves its clock at
                // midnight): back to the day's start, as upstream.
                let h = z.hour() as i64;
                if h != 0 {
                    z = if h > 12 {
                        z.checked_add((24 - h).hours()).ok()?
                    } else {
                        z.checked_sub(h.hours()).ok()?
                    };
                }
                if z.day() == 1 {
                    continue 'wrap;
                }
            }
            while !has(self.hour, z.hour() as i64) {
                if !added {
                    added = true;
                    z = z.date().at(z.hour(), 0, 0, 0).to_zoned(tz.clone()).ok()?;
                }
                z = z.checked_add(1.hour()).ok()?;
                if z.hour() == 0 {
                    continue 'wrap;
                }
            }
            while !has(self.minute, z.minute() as i64) {
                added = true;
                z = z.checked_add(1.minute()).ok()?;
                if z.minute() == 0 {
                    continue 'wrap;
                }
            }
            return Some(z.timestamp());
        }
    }
}

/// The zone a CronJob's `spec.timeZone` names (UTC when unset), checked as
/// upstream validates it: an explicit IANA name, spelt exactly.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, CronError> {
    let Some(name) = name else {
        return Ok(TimeZone::UTC);
    };
    if name.is_empty() {
        return Err(bad("unknown time zone \"\""));
    }
    for part in name.split('/') {
        let ok_chars = part
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'));
        if part == "."
            || part == ".."
            || part.starts_with('-')
            || part.is_empty()
            || part.len() > 14
            || !ok_chars
        {
            return Err(bad(format!(
                "unknown time zone {name:?}: each part must match [A-Za-z.\\-_0-9+]{{1,14}}"
            )));
        }
    }
    if name.eq_ignore_ascii_case("local") {
        return Err(bad(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
    let tz = TimeZone::get(name).map_err(|_| bad(format!("unknown time zone {name}")))?;
    // The database is searched without regard to case; upstream's is not.
    let exact = tz.iana_name().is_none_or(|n| n == name) || name == "UTC";
    if !exact {
        return Err(bad(format!("unknown time zone {name}")));
    }
    Ok(tz)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(spec: &str, after: &str) -> String {
        Schedule::parse(spec)
            .expect(spec)
            .next_after(at(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into())
    }

    fn err(spec: &str) -> String {
        Schedule::parse(spec).expect_err(spec).to_string()
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        assert_eq!(
            next("* * * * *", "2024-03-05T10:20:30Z"),
            "2024-03-05T10:21:00Z"
        );
        // Strictly after: a time on the schedule moves to the next one.
        assert_eq!(
            next("* * * * *", "2024-03-05T10:21:00Z"),
            "2024-03-05T10:22:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-03-05T10:20:00Z"),
            "2024-03-05T10:30:00Z"
        );
        assert_eq!(
            next("5-10/2 * * * *", "2024-03-05T10:07:00Z"),
            "2024-03-05T10:09:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2024-03-05T10:26:00Z"),
            "2024-03-05T10:45:00Z"
        );
        assert_eq!(
            next("0 9,17 * * *", "2024-03-05T10:00:00Z"),
            "2024-03-05T17:00:00Z"
        );
        assert_eq!(
            next("0 0 1 JAN,jul *", "2024-03-05T10:00:00Z"),
            "2024-07-01T00:00:00Z"
        );
        assert_eq!(
            next("30 8 * * Mon-FRI", "2024-03-08T09:00:00Z"),
            "2024-03-11T08:30:00Z"
        );
        assert_eq!(
            next("0 12 ? * sun", "2024-03-05T00:00:00Z"),
            "2024-03-10T12:00:00Z"
        );
        // Leap day: four years ahead at most.
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // Well-formed but never: none within five years.
        assert_eq!(next("0 0 30 2 *", "2024-01-01T00:00:00Z"), "never");
    }

    #[test]
    fn day_of_month_and_week_combine_as_vixie_cron() {
        // Both restricted: either matches (the 13th, or any Friday).
        assert_eq!(
            next("0 0 13 * 5", "2024-09-01T00:00:00Z"),
            "2024-09-06T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2024-09-07T00:00:00Z"),
            "2024-09-13T00:00:00Z"
        );
        // One is *: both must match (so only Fridays).
        assert_eq!(
            next("0 0 * * 5", "2024-09-07T00:00:00Z"),
            "2024-09-13T00:00:00Z"
        );
        // A stepped star is a restriction: every tenth day or Mondays.
        assert_eq!(
            next("0 0 */10 * 1", "2024-09-03T00:00:00Z"),
            "2024-09-09T00:00:00Z"
        );
    }

    #[test]
    fn descriptors() {
        let cases = [
            ("@yearly", "2025-01-01T00:00:00Z"),
            ("@annually", "2025-01-01T00:00:00Z"),
            ("@monthly", "2024-04-01T00:00:00Z"),
            ("@weekly", "2024-03-10T00:00:00Z"),
            ("@daily", "2024-03-06T00:00:00Z"),
            ("@midnight", "2024-03-06T00:00:00Z"),
            ("@hourly", "2024-03-05T11:00:00Z"),
        ];
        for (spec, want) in cases {
            assert_eq!(next(spec, "2024-03-05T10:20:30Z"), want, "{spec}");
        }
        assert_eq!(
            next("@every 90s", "2024-03-05T10:20:30.5Z"),
            "2024-03-05T10:22:00Z"
        );
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        assert_eq!(
            err("* * *"),
            "expected exactly 5 fields (minute hour day-of-month month day-of-week), found 3"
        );
        assert_eq!(err(""), "the schedule is empty");
        assert_eq!(
            err("61 * * * *"),
            "minute field \"61\": 61 is above the maximum 59"
        );
        assert_eq!(
            err("* 24 * * *"),
            "hour field \"24\": 24 is above the maximum 23"
        );
        assert_eq!(
            err("* * 0 * *"),
            "day-of-month field \"0\": 0 is below the minimum 1"
        );
        assert_eq!(
            err("* * * 13 *"),
            "month field \"13\": 13 is above the maximum 12"
        );
        assert_eq!(
            err("* * * * 7"),
            "day-of-week field \"7\": 7 is above the maximum 6"
        );
        assert_eq!(
            err("* * * foo *"),
            "month field \"foo\": \"foo\" is neither a number nor a month name"
        );
        assert_eq!(
            err("x * * * *"),
            "minute field \"x\": \"x\" is not a number"
        );
        assert_eq!(
            err("5-1 * * * *"),
            "minute field \"5-1\": the range starts at 5, after its end 1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "minute field \"*/0\": the step must be a positive number"
        );
        assert_eq!(
            err("1-2-3 * * * *"),
            "minute field \"1-2-3\": too many hyphens"
        );
        assert_eq!(
            err("*/2/3 * * * *"),
            "minute field \"*/2/3\": too many slashes"
        );
        assert_eq!(
            err("1,,2 * * * *"),
            "minute field \"1,,2\": an empty list item"
        );
        assert!(err("@fortnightly").starts_with("unrecognized descriptor \"@fortnightly\""));
        assert!(err("@every soon").starts_with("\"@every soon\": not a duration"));
    }

    #[test]
    fn time_zones_are_explicit_iana_names() {
        assert_eq!(time_zone(None).unwrap(), TimeZone::UTC);
        assert!(time_zone(Some("Europe/Berlin")).is_ok());
        assert!(time_zone(Some("UTC")).is_ok());
        assert_eq!(
            time_zone(Some("Mars/Olympus")).unwrap_err().to_string(),
            "unknown time zone Mars/Olympus"
        );
        assert!(time_zone(Some("europe/berlin")).is_err(), "case matters");
        assert!(time_zone(Some("Local")).is_err());
        assert!(time_zone(Some("../etc/passwd")).is_err());
        assert!(time_zone(Some("")).is_err());
    }

    #[test]
    fn schedules_read_the_zone_wall_clock_through_daylight_saving() {
        let ny = time_zone(Some("America/New_York")).unwrap();
        let s = Schedule::parse("30 9 * * *").unwrap();
        // 09:30 in New York is 14:30 UTC in winter, 13:30 in summer.
        let winter = s.next_after(at("2024-01-10T00:00:00Z"), &ny).unwrap();
        assert_eq!(winter, at("2024-01-10T14:30:00Z"));
        let summer = s.next_after(at("2024-07-10T00:00:00Z"), &ny).unwrap();
        assert_eq!(summer, at("2024-07-10T13:30:00Z"));
        // 2024-03-10: 02:00 jumps to 03:00, so 02:30 does not happen that day.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        let after = gap.next_after(at("2024-03-10T05:00:00Z"), &ny).unwrap();
        assert_eq!(after, at("2024-03-11T06:30:00Z"));
        // Hourly keeps firing on the hour through the change.
        let hourly = Schedule::parse("@hourly").unwrap();
        let t = hourly.next_after(at("2024-03-10T06:30:00Z"), &ny).unwrap();
        assert_eq!(t, at("2024-03-10T07:00:00Z"));
        // Berlin: 2024-10-27 03:00 goes back to 02:00.
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        let daily = Schedule::parse("0 12 * * *").unwrap();
        let t = daily
            .next_after(at("2024-10-26T11:00:00Z"), &berlin)
            .unwrap();
        assert_eq!(t, at("2024-10-27T11:00:00Z"), "noon CET is 11:00 UTC");
    }
}
