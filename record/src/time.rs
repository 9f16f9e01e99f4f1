//! Formatting of the record's times: nanoseconds since the Unix epoch as UTC, and offsets
//! from the case start, to the millisecond.

/// `2026-11-26T09:12:03.120Z`.
pub fn utc(ns: i64) -> String {
    let ms = ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1_000);
    let millis = ms.rem_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60
    )
}

/// `01:02:03.456` (hours may exceed 24; negative offsets get a leading `-`).
pub fn offset(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let ms = ns.unsigned_abs() / 1_000_000;
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    format!(
        "{sign}{h:02}:{:02}:{:02}.{:03}",
        rest / 60_000,
        rest % 60_000 / 1_000,
        rest % 1_000
    )
}

/// Seconds with millisecond precision, e.g. `12.345`.
pub fn seconds(ns: i64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// Howard Hinnant's days -> (year, month, day) for the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29T12:34:56.789Z (a leap day).
        assert_eq!(utc(951_827_696_789_000_000), "2000-02-29T12:34:56.789Z");
        assert_eq!(utc(1_795_000_000_123_456_789), "2026-11-18T11:06:40.123Z");
        assert_eq!(utc(-1_000_000), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn offsets_read_as_clock_durations() {
        assert_eq!(offset(0), "00:00:00.000");
        assert_eq!(offset(3_723_456_000_000), "01:02:03.456");
        assert_eq!(offset(-1_500_000_000), "-00:00:01.500");
        assert_eq!(seconds(12_345_678_901), "12.346");
    }
}
