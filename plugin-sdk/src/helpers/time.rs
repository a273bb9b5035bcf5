//! Calendar dates from the host's Unix time: plugins have no clock, they are given
//! `Context.now_ms` and format it themselves.
//!
//! ```
//! use payproxy_plugin_sdk::helpers::time::DateTime;
//!
//! let t = DateTime::from_unix_ms(1_700_000_000_999, 0);
//! assert_eq!((t.year, t.month, t.day), (2023, 11, 14));
//! assert_eq!((t.hour, t.minute, t.second, t.weekday), (22, 13, 20, 1)); // a Tuesday
//! ```

/// A Unix time as calendar fields (proleptic Gregorian), at a fixed offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year, e.g. `2023`.
    pub year: u64,
    /// Month, 1–12.
    pub month: u64,
    /// Day of the month, 1–31.
    pub day: u64,
    /// Hour, 0–23.
    pub hour: u64,
    /// Minute, 0–59.
    pub minute: u64,
    /// Second, 0–59.
    pub second: u64,
    /// Day of the week, 0 = Monday … 6 = Sunday.
    pub weekday: u64,
}

impl DateTime {
    /// The calendar fields of a Unix time in milliseconds (the fraction of a second is
    /// dropped) at `offset_secs` east of UTC (`0` for UTC, `7 * 3600` for Jakarta).
    pub fn from_unix_ms(now_ms: u64, offset_secs: u64) -> DateTime {
        let secs = now_ms / 1000 + offset_secs;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 3) % 7,
        }
    }
}

/// Proleptic Gregorian (year, month 1–12, day 1–31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date from 1970 on (the inverse of
/// [`civil_from_days`]); `None` for a date before 1970 or out of range.
pub fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    if year < 1970 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    // A day past the end of its month (`31 Feb`) is not a date.
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

/// Unix seconds of an HTTP `Date` header (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994
/// 08:49:37 GMT`), the provider's clock in its answer; `None` when it is not one.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let number = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut hms = time.split(':');
    let (h, m, sec) = (
        number(hms.next()?, 2)?,
        number(hms.next()?, 2)?,
        number(hms.next()?, 2)?,
    );
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(number(year, 4)?, month, number(day, 2)?)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 12:00:00 GMT"),
            Some(1_709_208_000)
        );
        for bad in [
            "",
            "Tue, 14 Nov 2023 22:13:20 UTC",
            "Tue, 14 Nov 2023 22:13 GMT",
            "Tue, 31 Feb 2023 22:13:20 GMT",
            "Tue, 14 Foo 2023 22:13:20 GMT",
            "Tue, 14 Nov 23 22:13:20 GMT",
            "Tue, 14 Nov 2023 24:00:00 GMT",
            "Tuesday, 14-Nov-23 22:13:20 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
        for days in [0, 59, 11_016, 19_675, 47_481] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days));
        }
    }

    #[test]
    fn known_dates() {
        for (days, want) in [
            (0, (1970, 1, 1)),
            (59, (1970, 3, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (19_675, (2023, 11, 14)),
            (19_782, (2024, 2, 29)),
            (47_481, (2099, 12, 31)),
        ] {
            assert_eq!(civil_from_days(days), want, "{days}");
        }
    }

    #[test]
    fn date_times_at_offsets() {
        let utc = DateTime::from_unix_ms(0, 0);
        assert_eq!(
            utc,
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 3,
            }
        );
        // 2000-02-28T23:59:59Z is 2000-02-29T06:59:59 at +07:00, a Tuesday.
        let t = DateTime::from_unix_ms(951_782_399_500, 7 * 3600);
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (6, 59, 59, 1));
        let sunday = DateTime::from_unix_ms(1_709_424_000_000, 0); // 2024-03-03
        assert_eq!((sunday.month, sunday.day, sunday.weekday), (3, 3, 6));
    }

    #[test]
    fn consecutive_days_advance_by_one() {
        let mut previous = civil_from_days(0);
        for days in 1..80_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m) == (py, pm) && d == pd + 1;
            let next_month = y == py && m == pm + 1 && d == 1;
            let next_year = y == py + 1 && (pm, m, d) == (12, 1, 1);
            assert!(
                next_day || next_month || next_year,
                "{days}: {previous:?} → {:?}",
                (y, m, d)
            );
            previous = (y, m, d);
        }
    }
}
