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
    let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
    value.checked_mul(*scale).map(|ns| sign * ns)
}

/// Units a duration string may end in, largest first, with their nanoseconds.
const UNITS: [(&str, i64); 5] = [
    ("d", 86_400 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// Nanoseconds as a duration string `parse_duration_ns` reads back (`-10m`, `90s`): in
/// the largest unit that divides it; `0s` for zero, nanoseconds when no unit divides it.
#[must_use]
pub(crate) fn format_duration_ns(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_owned();
    }
    UNITS.iter().find(|(_, scale)| ns % scale == 0).map_or_else(
        || format!("{ns}ns"),
        |(unit, scale)| format!("{}{unit}", ns / scale),
    )
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

    #[test]
    fn durations_format_as_they_parse() {
        for text in ["-10m", "90s", "2h", "1d", "-100ms", "0s"] {
            let ns = parse_duration_ns(text).unwrap_or_default();
            assert_eq!(format_duration_ns(ns), text);
        }
        assert_eq!(format_duration_ns(1_500), "1500ns");
    }
}
