//! Kubernetes quantities (`2Gi`, `1.5G`, `512Mi`, `1e9`) as byte counts, exactly.

/// A Kubernetes quantity in bytes, rounded up as Kubernetes rounds a fractional byte
/// count: `2Gi`, `1.5G`, `512Mi`, `1e9`, `100m` (a thousandth: rounds up to 1).
/// Exact integer arithmetic: `kube_quantity` 0.9's `to_bytes_u64` turns `1.5G` into
/// 1000000000, dropping the fraction.
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    // value = digits / 10^frac_len * multiplier, with the multiplier as num / den.
    let frac_len = u32::try_from(frac.len()).ok()?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (10u128.pow(12), 1),
        "P" => (10u128.pow(15), 1),
        "E" => (10u128.pow(18), 1),
        exp => {
            let e: i32 = exp.strip_prefix(['e', 'E'])?.parse().ok()?;
            if e.unsigned_abs() > 30 {
                return None;
            }
            if e >= 0 {
                (10u128.pow(e.unsigned_abs()), 1)
            } else {
                (1, 10u128.pow(e.unsigned_abs()))
            }
        }
    };
    let den = den.checked_mul(10u128.checked_pow(frac_len)?)?;
    let num = digits.checked_mul(num)?;
    u64::try_from(num.div_ceil(den)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        let table = [
            ("2Gi", Some(2u64 << 30)),
            ("512Mi", Some(512 << 20)),
            ("1.5G", Some(1_500_000_000)),
            ("1.5Gi", Some(3 << 29)),
            ("1e9", Some(1_000_000_000)),
            ("1E3", Some(1000)),
            (".5Ki", Some(512)),
            ("100m", Some(1)),
            ("1073741824", Some(1 << 30)),
            ("0", Some(0)),
            ("", None),
            ("Gi", None),
            ("2 GB", None),
            ("1e99", None),
        ];
        for (text, want) in table {
            assert_eq!(quantity_bytes(text), want, "{text:?}");
        }
    }
}
