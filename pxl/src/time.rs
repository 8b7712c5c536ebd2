//! PxL's time strings: relative (`-5m`, `-30s`, `2h`) and absolute, as Pixie reads them.

/// A duration string (`-5m`, `30s`, `100ms`, `2h`, `1d`) in nanoseconds, or `None` when it
/// is not one. As Pixie's `StringToTimeInt`: an optional minus, digits, one unit.
#[must_use]
pub fn parse_duration_ns(text: &str) -> Option<i64> {
    let text = text.trim();
    let (sign, digits_and_unit) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let split = digits_and_unit.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = digits_and_unit.split_at(split);
    let value: i64 = digits.parse().ok()?;
    let scale: i64 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return None,
    };
    value.checked_mul(scale).map(|ns| sign * ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixie_duration_forms() {
        assert_eq!(parse_duration_ns("-5m"), Some(-300_000_000_000));
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("-100ms"), Some(-100_000_000));
        assert_eq!(parse_duration_ns("2h"), Some(7_200_000_000_000));
        assert_eq!(parse_duration_ns("1d"), Some(86_400_000_000_000));
        assert_eq!(parse_duration_ns("5 minutes"), None);
        assert_eq!(parse_duration_ns("m"), None);
        assert_eq!(parse_duration_ns("99999999999999999999s"), None);
    }
}
