//! `reqTime`: ISO-8601 local time at +07:00 (Jakarta) from the host's Unix time; plugins
//! have no clock.

use payproxy_plugin_sdk::helpers::time::DateTime;

/// Jakarta's fixed offset, in seconds.
const OFFSET_SECS: u64 = 7 * 3600;

/// `2023-11-15T05:13:20+07:00` for a Unix time in milliseconds.
pub fn req_time(now_ms: u64) -> String {
    let t = DateTime::from_unix_ms(now_ms, OFFSET_SECS);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+07:00",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, for years from 1970 on).
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of an ISO-8601 time with an explicit offset, as DANA writes them
/// (`2023-11-15T05:13:20+07:00`; `Z` for UTC too); `None` for anything else.
pub fn parse_iso(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if year < 1970
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let offset: i64 = match &text[19..] {
        "Z" => 0,
        zone if zone.len() == 6 && zone.as_bytes()[3] == b':' => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (number(20..22)?, number(23..25)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60) as i64
        }
        _ => return None,
    };
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(local as i64 - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::{parse_iso, req_time};

    #[test]
    fn iso_times_round_trip() {
        for secs in [0, 951_757_200, 1_700_000_000, 1_709_210_096, 4_102_419_599] {
            assert_eq!(parse_iso(&req_time(secs * 1000)), Some(secs), "{secs}");
        }
        assert_eq!(parse_iso("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_iso("2023-11-14T17:13:20-05:00"), Some(1_700_000_000));
        for bad in [
            "",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+0700",
            "2023-11-1xT22:13:20Z",
            "2023-11-14T22:13:20+07:0x",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_python_datetime() {
        // datetime.fromtimestamp(t, timezone(timedelta(hours=7))).isoformat()
        for (secs, want) in [
            (0, "1970-01-01T07:00:00+07:00"),
            (951_757_200, "2000-02-29T00:00:00+07:00"),
            (1_700_000_000, "2023-11-15T05:13:20+07:00"),
            (4_102_419_599, "2099-12-31T23:59:59+07:00"),
        ] {
            assert_eq!(req_time(secs * 1000 + 999), want, "{secs}");
        }
    }
}
