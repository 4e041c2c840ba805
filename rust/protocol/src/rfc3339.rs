//! RFC 3339 timestamps: Docker reports file times that way (Go's `RFC3339Nano`), and runc's
//! log lines, which the OCI runtime wrapper writes, need them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn digits(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp such as
/// `2026-12-01T21:26:50.420908758Z` or `2026-12-01T22:26:50+01:00`; `None` when it is not one.
pub fn parse_rfc3339_ns(text: &str) -> Option<i128> {
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut parts = date.splitn(3, '-');
    let year = digits(parts.next()?)?;
    let month = u32::try_from(digits(parts.next()?)?).ok().filter(|m| (1..=12).contains(m))?;
    let day = u32::try_from(digits(parts.next()?)?).ok().filter(|d| (1..=31).contains(d))?;
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, fraction)) => (hms, Some(fraction)),
        None => (clock, None),
    };
    let mut hms = hms.splitn(3, ':');
    let hour = digits(hms.next()?)?;
    let minute = digits(hms.next()?)?;
    let second = digits(hms.next()?)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 => digits(f)? * 10_i64.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    let offset_secs = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (digits(h)? * 3600 + digits(m)? * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
}

/// `time` as RFC 3339 in UTC with nanoseconds, e.g. `2026-12-01T21:26:50.420908758Z`.
pub fn format_rfc3339(time: SystemTime) -> String {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => (0, 0),
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z", of_day / 3600, of_day / 60 % 60, of_day % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn docker_times_parse() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ns("2026-12-01T21:26:50.420908758Z"), Some(1_796_160_410_420_908_758));
        assert_eq!(parse_rfc3339_ns("2026-12-01T22:26:50.420908758+01:00"), Some(1_796_160_410_420_908_758));
        assert_eq!(parse_rfc3339_ns("2026-12-01T21:26:50.5Z"), Some(1_796_160_410_500_000_000));
        assert_eq!(parse_rfc3339_ns("2000-02-29T00:00:00Z"), Some(951_782_400 * 1_000_000_000));
    }

    #[test]
    fn garbage_is_not_a_time() {
        for text in ["", "2026-13-01T00:00:00Z", "2026-12-01 00:00:00Z", "2026-12-01T00:00:00", "x-1-1T0:0:0Z"] {
            assert_eq!(parse_rfc3339_ns(text), None, "{text}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        let t = UNIX_EPOCH + Duration::new(1_796_160_410, 420_908_758);
        let text = format_rfc3339(t);
        assert_eq!(text, "2026-12-01T21:26:50.420908758Z");
        assert_eq!(parse_rfc3339_ns(&text), Some(1_796_160_410_420_908_758));
    }
}
