//! The API's durations (`ttl`, `timeout`, the class's limits): `<number><unit>` repeated,
//! as the admission pattern allows them, parsed and formatted for messages.

use std::time::Duration;

/// `<number><unit>` repeated, units s, m, h, d (e.g. "1d12h").
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]{1,6}[smhd]){1,4}$";

/// `90000s` as `1d1h`, for messages.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// Parses the API's duration format (`<number><unit>` repeated, units s, m, h, d).
///
/// Returns `None` for anything the admission pattern would refuse, so a value that got past
/// an older schema still cannot panic the operator.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(digit))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if number.is_some() {
        // Trailing digits without a unit.
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_every_unit_and_combinations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(
            parse_duration("1d12h30m"),
            Some(Duration::from_secs(86_400 + 12 * 3600 + 1800))
        );
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "h",
            "12",
            "1w",
            "1.5h",
            "-1h",
            "1h2",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?} should not parse");
        }
    }
}
