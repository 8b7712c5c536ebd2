//! Where each probe is on this node, as the PEM reports it to the operator, to
//! `px trace list` and to `px.GetTracepointStatus()`.

use px_api::pem::{ProbePhase, ProbeState};

/// Why a probe could not be loaded: a CamelCase reason and a message a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub(crate) struct ProbeFailure {
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl ProbeFailure {
    pub(crate) fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// A spec the PEM cannot make sense of.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidSpec", message)
    }
}

/// A probe's phase on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; waiting for a target process.
    Pending(String),
    Running,
    Failed(ProbeFailure),
    /// Removed (reason `Expired` when its TTL ran out); kept for a while so pollers
    /// see the end.
    Terminated {
        reason: &'static str,
        message: String,
    },
}

impl Phase {
    pub(crate) fn to_proto(&self, state: &mut ProbeState) {
        let (phase, reason, message) = match self {
            Self::Pending(why) => (ProbePhase::Pending, "", why.as_str()),
            Self::Running => (ProbePhase::Running, "", ""),
            Self::Failed(f) => (ProbePhase::Failed, f.reason.as_str(), f.message.as_str()),
            Self::Terminated { reason, message } => {
                (ProbePhase::Terminated, *reason, message.as_str())
            }
        };
        state.set_phase(phase);
        reason.clone_into(&mut state.reason);
        message.clone_into(&mut state.message);
    }

    /// Pixie's state names, for `px.GetTracepointStatus()`.
    pub(crate) fn pixie_state(&self) -> &'static str {
        match self {
            Self::Pending(_) => "PENDING_STATE",
            Self::Running => "RUNNING_STATE",
            Self::Failed(_) => "FAILED_STATE",
            Self::Terminated { .. } => "TERMINATED_STATE",
        }
    }
}
