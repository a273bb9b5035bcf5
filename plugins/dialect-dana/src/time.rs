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
