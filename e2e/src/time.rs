//! Timestamps in the forms the API's `Time` and `MicroTime` serialize to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> i64 {
    Timestamp::now().as_second()
}

fn as_string(value: Result<serde_json::Value, serde_json::Error>) -> String {
    value
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The current time as `metav1.Time` writes it (`2006-01-02T15:04:05Z`).
pub(crate) fn now_rfc3339() -> String {
    as_string(serde_json::to_value(Time(Timestamp::now())))
}

/// The current time as `metav1.MicroTime` writes it (`2006-01-02T15:04:05.000000Z`).
pub(crate) fn now_micro_rfc3339() -> String {
    as_string(serde_json::to_value(MicroTime(Timestamp::now())))
}
