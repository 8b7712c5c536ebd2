//! Pixie's data-access modes, enforced where rows enter the store: a sensitive column
//! (one its table's schema marks so: bodies, headers, query text) never holds the raw
//! value under a restricted mode, so no query, pushed down to the PEM or not, and no
//! filter on the raw value, can see it.
//!
//! - `Full`: values as captured.
//! - `Restricted`: every value of a sensitive column is `REDACTED`, as Pixie's planner
//!   replaces those columns.
//! - `PIIRestricted`: personal data in those columns is masked the way Pixie's
//!   `px.redact_pii_best_effort` masks it (`<REDACTED_EMAIL>`, `<REDACTED_IPV4>`, ...); the
//!   rest of the text stays.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use regex::{Captures, Regex};

/// What `Restricted` leaves of a sensitive value.
pub const REDACTED: &str = "REDACTED";

/// How much of the captured data queries may see (the Vizier's `dataAccess`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum DataAccess {
    /// Everything as captured.
    #[default]
    Full,
    /// Sensitive columns hold `REDACTED`.
    Restricted,
    /// Personal data in sensitive columns is masked.
    PiiRestricted,
}

impl DataAccess {
    /// The name the Vizier resource uses.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "Full",
            Self::Restricted => "Restricted",
            Self::PiiRestricted => "PIIRestricted",
        }
    }
}

impl FromStr for DataAccess {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "Full" | "" => Ok(Self::Full),
            "Restricted" => Ok(Self::Restricted),
            "PIIRestricted" => Ok(Self::PiiRestricted),
            other => Err(format!(
                "{other:?} is not a data access mode: use Full, Restricted or PIIRestricted"
            )),
        }
    }
}

/// `batch` with the columns at `sensitive` redacted as `access` says.
pub(crate) fn redact_batch(
    batch: RecordBatch,
    sensitive: &[usize],
    access: DataAccess,
) -> RecordBatch {
    if access == DataAccess::Full || sensitive.is_empty() {
        return batch;
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for &i in sensitive {
        let Some(strings) = columns
            .get(i)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        else {
            continue;
        };
        let redacted: StringArray = strings
            .iter()
            .map(|value| {
                value.map(|v| match access {
                    DataAccess::Restricted => Cow::Borrowed(REDACTED),
                    _ => redact_pii(v),
                })
            })
            .collect();
        columns[i] = Arc::new(redacted);
    }
    // Same schema, same lengths, same types: this holds; keep the batch whole if not.
    RecordBatch::try_new(batch.schema(), columns).unwrap_or_else(|_| {
        debug_assert!(false, "redaction changed a batch's shape");
        RecordBatch::new_empty(batch.schema())
    })
}

/// One kind of personal data: where it may be, whether a match really is one, and
/// what it becomes.
struct Rule {
    pattern: Regex,
    valid: fn(&str) -> bool,
    mask: &'static str,
}

/// Emails first (an address may hold something that looks like an IP), then what has
/// separators of its own (MAC, IPv6, IPv4, IMEI), then the long numbers (IBAN, cards,
/// SSNs), so each value is masked once, by its most specific rule.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    // The patterns are constants and a test checks that all of them compile.
    let rule = |pattern: &str, valid: fn(&str) -> bool, mask| {
        Regex::new(pattern).ok().map(|pattern| Rule {
            pattern,
            valid,
            mask,
        })
    };
    [
        rule(
            r"[A-Za-z0-9._%+*\-]+(?:@|%40)[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*",
            |_| true,
            "<REDACTED_EMAIL>",
        ),
        rule(
            r"\b[0-9A-Fa-f]{2}(?:[:\-][0-9A-Fa-f]{2}){5}\b",
            same_separators,
            "<REDACTED_MAC_ADDR>",
        ),
        rule(
            r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?",
            |m| m.parse::<std::net::Ipv6Addr>().is_ok(),
            "<REDACTED_IPV6>",
        ),
        rule(
            r"\b\d{1,3}(?:\.\d{1,3}){3}\b",
            |m| m.parse::<std::net::Ipv4Addr>().is_ok(),
            "<REDACTED_IPV4>",
        ),
        rule(
            r"\b\d{2}-\d{6}-\d{6}-\d{1,2}\b",
            |_| true,
            "<REDACTED_IMEI>",
        ),
        rule(
            r"\b[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4})+(?:[ \-]?[A-Z0-9]{1,3})?\b",
            iban_checksum,
            "<REDACTED_IBAN>",
        ),
        rule(r"\b\d(?:[ \-]?\d){12,18}\b", luhn, "<REDACTED_CC_NUMBER>"),
        rule(r"\b\d{3}-\d{2}-\d{4}\b", ssn, "<REDACTED_SSN>"),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// `text` with the personal data Pixie's best-effort redaction knows masked.
#[must_use]
pub fn redact_pii(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for rule in RULES.iter() {
        if !rule.pattern.is_match(&out) {
            continue;
        }
        let replaced = rule
            .pattern
            .replace_all(&out, |c: &Captures<'_>| {
                let m = &c[0];
                if (rule.valid)(m) {
                    rule.mask.to_owned()
                } else {
                    m.to_owned()
                }
            })
            .into_owned();
        out = Cow::Owned(replaced);
    }
    out
}

/// A MAC address writes every separator the same way.
fn same_separators(m: &str) -> bool {
    let mut seps = m.chars().filter(|c| *c == ':' || *c == '-');
    let first = seps.next();
    seps.all(|c| Some(c) == first)
}

/// Luhn's check, which card numbers pass.
fn luhn(m: &str) -> bool {
    let digits: Vec<u32> = m.chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    (13..=19).contains(&digits.len()) && sum.is_multiple_of(10)
}

/// ISO 13616's check: the rearranged IBAN, as a number, is 1 mod 97.
fn iban_checksum(m: &str) -> bool {
    let compact: Vec<char> = m.chars().filter(char::is_ascii_alphanumeric).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = compact[4..].iter().chain(&compact[..4]);
    let mut remainder = 0u32;
    for c in rearranged {
        let Some(value) = c.to_digit(36) else {
            return false;
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// A US social security number: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn ssn(m: &str) -> bool {
    let mut parts = m.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_rule_compiles() {
        assert_eq!(RULES.len(), 8);
    }

    #[test]
    fn each_kind_is_masked_in_text_around_it() {
        for (value, mask) in [
            ("test@pixie.io", "<REDACTED_EMAIL>"),
            ("test%40pixie.io", "<REDACTED_EMAIL>"),
            (
                "valid_ip_in_email255.255.255.255@mydomain.com",
                "<REDACTED_EMAIL>",
            ),
            ("192.168.0.1", "<REDACTED_IPV4>"),
            ("255.255.255.255", "<REDACTED_IPV4>"),
            ("ab:12:34:56:789:1011:1213:0", "<REDACTED_IPV6>"),
            ("::abcd:1234:ffff", "<REDACTED_IPV6>"),
            ("0123:abcd::eeee:10.0.0.1", "<REDACTED_IPV6>"),
            ("1:2:abcd:a:b:c::", "<REDACTED_IPV6>"),
            ("ab:12:00:64:99:ff", "<REDACTED_MAC_ADDR>"),
            ("ff-ff-ff-ff-ff-ff", "<REDACTED_MAC_ADDR>"),
            ("4111 1111111 11111", "<REDACTED_CC_NUMBER>"),
            ("5019-7170-1010-3742", "<REDACTED_CC_NUMBER>"),
            ("4111111111111111", "<REDACTED_CC_NUMBER>"),
            ("01-786058-312233-6", "<REDACTED_IMEI>"),
            ("GB29NWBK60161331926819", "<REDACTED_IBAN>"),
            ("GB29 NWBK 6016 1331 9268 19", "<REDACTED_IBAN>"),
            ("BE68 5390 0754 7034", "<REDACTED_IBAN>"),
            ("303-58-8256", "<REDACTED_SSN>"),
        ] {
            let text = format!("{{\"a\": \"{value}\", \"b\": 7}}");
            assert_eq!(
                redact_pii(&text),
                format!("{{\"a\": \"{mask}\", \"b\": 7}}"),
                "{value}"
            );
        }
    }

    #[test]
    fn look_alikes_are_kept() {
        for value in [
            "abcdef00123459689",
            "999.999.0.0",
            "1:2:3:4:5:6",
            "5555 0000 0000 0000",
            "000-12-1234",
            "666-12-1234",
            "900-12-1234",
            "999-00-9999",
            "999-12-0000",
            "GET /api/v1/users?page=2 HTTP/1.1",
            "12:30:45",
        ] {
            assert_eq!(redact_pii(value), value, "{value}");
        }
    }

    #[test]
    fn only_the_sensitive_columns_change() {
        let batch = RecordBatch::try_from_iter([
            (
                "path",
                Arc::new(StringArray::from(vec![Some("/a@b.c"), None])) as ArrayRef,
            ),
            (
                "body",
                Arc::new(StringArray::from(vec![Some("mail a@b.c now"), None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let restricted = redact_batch(batch.clone(), &[1], DataAccess::Restricted);
        let body = |b: &RecordBatch, i: usize| {
            let a = b.column(i).as_any().downcast_ref::<StringArray>().unwrap();
            (0..a.len())
                .map(|r| a.is_valid(r).then(|| a.value(r).to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(body(&restricted, 1), vec![Some(REDACTED.to_owned()), None]);
        assert_eq!(body(&restricted, 0), body(&batch, 0));
        let pii = redact_batch(batch.clone(), &[1], DataAccess::PiiRestricted);
        assert_eq!(
            body(&pii, 1),
            vec![Some("mail <REDACTED_EMAIL> now".to_owned()), None]
        );
        assert_eq!(redact_batch(batch.clone(), &[1], DataAccess::Full), batch);
    }

    #[test]
    fn modes_parse_by_pixies_names() {
        assert_eq!("PIIRestricted".parse(), Ok(DataAccess::PiiRestricted));
        assert_eq!("".parse(), Ok(DataAccess::Full));
        assert!(
            "Everything"
                .parse::<DataAccess>()
                .unwrap_err()
                .contains("Full, Restricted")
        );
    }
}
