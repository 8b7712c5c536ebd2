//! Standard `metav1.Condition`s on every kind, in the shape kstatus and Argo CD read.
//!
//! Every kind carries `Ready` (True when the object does what its spec asks),
//! `Reconciling` (True while the operator is still converging) and `Stalled` (True when it
//! cannot make progress without a change from the user). kstatus reads `Reconciling` and
//! `Stalled` as "abnormal-true" conditions: `Current` means both are absent or False and
//! `Ready` is True. `Degraded` (True when the object works, but not everywhere) is for
//! humans and for Argo CD's health checks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the object does what its spec asks.
pub const READY: &str = "Ready";
/// Condition type: the operator is still working towards the spec (kstatus `InProgress`).
pub const RECONCILING: &str = "Reconciling";
/// Condition type: the operator cannot make progress without a change (kstatus `Failed`).
pub const STALLED: &str = "Stalled";
/// Condition type: working, but not everywhere (some PEMs or nodes failed).
pub const DEGRADED: &str = "Degraded";
/// Condition type on a Vizier: spec fields that only Pixie Cloud understands were
/// accepted and are ignored (the message names them).
pub const IGNORED_FIELDS: &str = "IgnoredFields";

/// The `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`.
    Unknown,
}

impl ConditionStatus {
    /// The string the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// One condition the operator wants on an object, before it meets the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type (`Ready`, `Reconciling`, ...).
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason; never empty.
    pub reason: String,
    /// Human-readable message; may be empty.
    pub message: String,
}

impl DesiredCondition {
    /// A condition of `type_` with `status`, `reason` and `message`.
    pub fn new(
        type_: &str,
        status: impl Into<ConditionStatus>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.to_string(),
            status: status.into(),
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// An abnormal-true condition (`Reconciling`, `Stalled`, `Degraded`): True with `reason`
/// and `message` when `on`, otherwise False with `off_reason` and no message.
pub(crate) fn toggle(
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    off_reason: &str,
) -> DesiredCondition {
    if on {
        DesiredCondition::new(type_, true, reason, message)
    } else {
        DesiredCondition::new(type_, false, off_reason, "")
    }
}

/// Sets `desired` in `conditions`: adds it, or updates the condition of the same type.
///
/// `lastTransitionTime` becomes `now` only when the condition is new or its status
/// changes; a new reason or message alone keeps the old time (as `meta.SetStatusCondition`
/// in apimachinery does). `now` is cut to whole seconds, as the API server stores a
/// `metav1.Time`, so what is set equals what is read back. `observedGeneration` is set
/// on the condition. Returns whether anything changed, so a caller can skip a status
/// write that would change nothing.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let now = &whole_seconds(now);
    let status = desired.status.as_str();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        let mut changed = false;
        if existing.status != status {
            existing.status = status.to_string();
            existing.last_transition_time = now.clone();
            changed = true;
        }
        if existing.reason != desired.reason {
            existing.reason = desired.reason;
            changed = true;
        }
        if existing.message != desired.message {
            existing.message = desired.message;
            changed = true;
        }
        if existing.observed_generation != observed_generation {
            existing.observed_generation = observed_generation;
            changed = true;
        }
        return changed;
    }
    conditions.push(Condition {
        type_: desired.type_,
        status: status.to_string(),
        reason: desired.reason,
        message: desired.message,
        observed_generation,
        last_transition_time: now.clone(),
    });
    true
}

/// `t` without its fraction of a second.
fn whole_seconds(t: &Time) -> Time {
    k8s_openapi::jiff::Timestamp::from_second(t.0.as_second())
        .map(Time)
        .unwrap_or_else(|_| t.clone())
}

/// Removes the condition of `type_`; returns whether there was one.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `"True"`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_new_condition_is_added_with_the_time_given() {
        let mut conds = Vec::new();
        let changed = set_condition(
            &mut conds,
            DesiredCondition::new(READY, false, "Deploying", "waiting for PEMs"),
            Some(3),
            &at(100),
        );
        assert!(changed);
        assert_eq!(conds.len(), 1);
        let c = &conds[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "False", "Deploying")
        );
        assert_eq!(c.message, "waiting for PEMs");
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, at(100));
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            DesiredCondition::new(READY, false, "Deploying", "0/2 PEMs ready"),
            Some(1),
            &at(100),
        );
        // Same status, new message: updated, but the transition time stays.
        assert!(set_condition(
            &mut conds,
            DesiredCondition::new(READY, false, "Deploying", "1/2 PEMs ready"),
            Some(1),
            &at(200),
        ));
        assert_eq!(conds[0].message, "1/2 PEMs ready");
        assert_eq!(conds[0].last_transition_time, at(100));
        // Status flips: the time moves.
        assert!(set_condition(
            &mut conds,
            DesiredCondition::new(READY, true, "AllReady", "2/2 PEMs ready"),
            Some(2),
            &at(300),
        ));
        assert_eq!(conds[0].status, "True");
        assert_eq!(conds[0].observed_generation, Some(2));
        assert_eq!(conds[0].last_transition_time, at(300));
        assert_eq!(conds.len(), 1, "updated in place, not appended");
    }

    #[test]
    fn transition_times_are_whole_seconds_as_the_api_server_keeps_them() {
        let mut conds = Vec::new();
        let precise = Time(k8s_openapi::jiff::Timestamp::new(100, 420_000_000).unwrap());
        set_condition(
            &mut conds,
            DesiredCondition::new(READY, true, "Running", ""),
            None,
            &precise,
        );
        assert_eq!(conds[0].last_transition_time, at(100));
    }

    #[test]
    fn setting_the_same_condition_again_changes_nothing() {
        let mut conds = Vec::new();
        let want = DesiredCondition::new(STALLED, true, "InvalidSpec", "bad symbol");
        set_condition(&mut conds, want.clone(), Some(4), &at(10));
        let before = conds.clone();
        assert!(!set_condition(&mut conds, want, Some(4), &at(99)));
        assert_eq!(conds, before);
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            DesiredCondition::new(READY, true, "Running", ""),
            None,
            &at(1),
        );
        set_condition(
            &mut conds,
            DesiredCondition::new(RECONCILING, false, "Done", ""),
            None,
            &at(2),
        );
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, READY));
        assert!(!is_true(&conds, RECONCILING));
        assert!(!is_true(&conds, STALLED), "absent is not true");
        assert!(remove_condition(&mut conds, RECONCILING));
        assert!(!remove_condition(&mut conds, RECONCILING));
        assert_eq!(conds.len(), 1);
        assert_eq!(
            find_condition(&conds, READY).unwrap().last_transition_time,
            at(1)
        );
    }
}
