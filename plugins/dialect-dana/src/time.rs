//! `reqTime`: ISO-8601 local time at +07:00 (Jakarta) from the host's Unix time; plugins
//! have no clock.

/// Jakarta's fixed offset, in seconds.
const OFFSET_SECS: u64 = 7 * 3600;

/// `2023-11-15T05:13:20+07:00` for a Unix time in milliseconds.
pub fn req_time(now_ms: u64) -> String {
    let secs = now_ms / 1000 + OFFSET_SECS;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+07:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::req_time;

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
