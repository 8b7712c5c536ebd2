//! Kubernetes quantities (`2Gi`, `512Mi`, `1G`, `1500000000`) as byte counts.

use kube_quantity::ParsedQuantity;

/// Parses a memory quantity the way Kubernetes does; for clap's `value_parser`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let parsed = ParsedQuantity::try_from(text).map_err(|e| {
        format!("{text:?} is not a Kubernetes quantity ({e}); write it like 2Gi, 512Mi or 1G")
    })?;
    parsed
        .to_bytes_u64()
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} must be a positive number of bytes, like 2Gi"))
}

/// Bytes in binary units for people (`1.2 GiB`).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_forms_parse() {
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1500"), Ok(1500));
    }

    #[test]
    fn bad_quantities_say_what_to_write() {
        assert!(parse_bytes("two gigs").unwrap_err().contains("like 2Gi"));
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
