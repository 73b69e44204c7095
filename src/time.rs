//! Dates, by `jiff`: UTC for what is stored and machine-read (history records,
//! JSON, blame), local time for what is shown to people.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `YYYY-MM-DD` (UTC) of a Unix timestamp. A time outside jiff's range (the
/// years -9999 to 9999) (only a hand-made commit has one) is written as `@<seconds>`, the form
/// in which git takes a raw date.
pub fn utc_date(seconds: i64) -> String {
    match Timestamp::from_second(seconds) {
        Ok(t) => t.strftime("%Y-%m-%d").to_string(),
        Err(_) => format!("@{seconds}"),
    }
}

/// RFC 3339 UTC of a Unix timestamp, e.g. `2025-03-01T09:30:00Z`; outside the
/// years -9999 to 9999, `@<seconds>` as for [`utc_date`].
pub fn utc_timestamp(seconds: i64) -> String {
    match Timestamp::from_second(seconds) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => format!("@{seconds}"),
    }
}

/// The current time as RFC 3339 UTC, to the second.
pub fn utc_now() -> String {
    utc_timestamp(Timestamp::now().as_second())
}

/// A stored RFC 3339 time shown in the local time zone, e.g.
/// `2025-03-01 10:30:00 CET`; `None` if `utc` is not such a time.
pub fn local_time(utc: &str) -> Option<String> {
    time_in(utc, TimeZone::system())
}

/// A stored RFC 3339 time shown in `tz`, as [`local_time`].
pub fn time_in(utc: &str, tz: TimeZone) -> Option<String> {
    let t: Timestamp = utc.parse().ok()?;
    Some(
        t.to_zoned_datetime(tz)
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(86_399), "1970-01-01");
        assert_eq!(utc_date(86_400), "1970-01-02");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_709_769_600), "2024-03-07");
        assert_eq!(utc_date(4_107_542_400), "2100-03-01");
    }

    #[test]
    fn times_out_of_the_calendar_are_written_raw() {
        assert_eq!(utc_date(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(utc_date(i64::MIN), format!("@{}", i64::MIN));
        assert_eq!(utc_timestamp(i64::MAX), format!("@{}", i64::MAX));
        assert_eq!(utc_date(253_402_128_000), "9999-12-30");
        assert_eq!(utc_date(-30_610_224_001), "0999-12-31");
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(951_782_400 + 3723), "2000-02-29T01:02:03Z");
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn now_is_to_the_second_and_reads_back() {
        let now = utc_now();
        assert_eq!(now.len(), "2025-03-01T09:30:00Z".len(), "{now}");
        assert!(now.ends_with('Z'), "{now}");
        assert!(now.parse::<Timestamp>().is_ok(), "{now}");
    }

    #[test]
    fn stored_times_are_shown_in_a_zone() {
        let plus_one = TimeZone::fixed(jiff::tz::offset(1));
        let shown = time_in("2025-03-01T09:30:00Z", plus_one).unwrap();
        assert!(shown.starts_with("2025-03-01 10:30:00 "), "{shown}");
        assert_eq!(
            time_in("2025-12-31T23:30:00Z", TimeZone::UTC).unwrap(),
            "2025-12-31 23:30:00 UTC"
        );
        assert_eq!(time_in("not a time", TimeZone::UTC), None);
    }
}
