//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: the holder renews the Lease every few seconds; another candidate takes it
//! over once it has not been renewed for its `leaseDurationSeconds`. Every write carries
//! the `resourceVersion` read, so two candidates racing for an expired Lease cannot both
//! win: the API server refuses the second with a 409.
//!
//! kube 5 has no leader-election helper, hence this module.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::Error;

/// Which Lease, who we are, and how long a Lease lasts.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This candidate's identity (its pod name in a cluster).
    pub holder: String,
    /// How long a Lease stays held without renewal.
    pub duration: Duration,
    /// How often the holder renews it (well under `duration`).
    pub renew_every: Duration,
}

/// What a candidate may do with a Lease as it reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it over.
    Take,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it and renewed it in time: wait.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// Decides what `holder` may do with a Lease whose spec is `spec`, at `now`.
pub fn decide(spec: Option<&LeaseSpec>, holder: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Take;
    };
    let current = spec.holder_identity.as_deref().unwrap_or("");
    if current.is_empty() {
        return Decision::Take;
    }
    if current == holder {
        return Decision::Renew;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed + SignedDuration::from_secs(duration) > now => Decision::Wait {
            holder: current.to_string(),
        },
        _ => Decision::Take,
    }
}

/// The Lease spec after `decision` by `cfg.holder` at `now` (`None` for [`Decision::Wait`]).
pub fn next_spec(
    old: Option<&LeaseSpec>,
    decision: &Decision,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let old = old.cloned().unwrap_or_default();
    match decision {
        Decision::Wait { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..old
        }),
        Decision::Take => Some(LeaseSpec {
            holder_identity: Some(cfg.holder.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(
                old.lease_transitions.unwrap_or(0)
                    + i32::from(old.holder_identity.is_some_and(|h| !h.is_empty())),
            ),
            ..old
        }),
    }
}

/// A candidate for the leadership the Lease stands for.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl LeaderElector {
    /// A candidate with `cfg` talking to `client`.
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            source,
        }
    }

    /// One attempt to take or renew the Lease: `Ok(true)` when we hold it afterwards,
    /// `Ok(false)` when someone else does (or won a race for it).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.error(e))?;
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.cfg.holder,
            now,
        );
        let Some(spec) = next_spec(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &decision,
            &self.cfg,
            now,
        ) else {
            return Ok(false);
        };
        let result = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // `replace` sends the resourceVersion read above: a concurrent writer
                // makes this fail with 409 instead of both believing they lead.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up if this candidate holds it (on a clean shutdown), so that the
    /// next candidate need not wait for it to expire. Best effort: a failure only means
    /// the next leader waits out the Lease's duration.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader Lease"),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.cfg.name, holder = %self.cfg.holder, "became the leader");
                    return;
                }
                Ok(false) if !announced => {
                    tracing::info!(lease = %self.cfg.name, "another operator leads; waiting for its Lease to expire");
                    announced = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(self.cfg.renew_every).await;
        }
    }

    /// Renews the Lease until it is lost: returns when a renewal found another holder, or
    /// when no renewal succeeded for the Lease's duration (another candidate may then
    /// have taken it, so the caller must stop acting as the leader).
    pub async fn hold(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.cfg.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    return Error::LeadershipLost {
                        namespace: self.cfg.namespace.clone(),
                        name: self.cfg.name.clone(),
                    };
                }
                Err(e) if last_renewed.elapsed() >= self.cfg.duration => return e,
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            name: "px-operator".into(),
            namespace: "px-system".into(),
            holder: "me".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    #[test]
    fn who_may_take_a_lease() {
        assert_eq!(decide(None, "me", at(100)), Decision::Take, "no Lease yet");
        let empty = LeaseSpec::default();
        assert_eq!(
            decide(Some(&empty), "me", at(100)),
            Decision::Take,
            "released"
        );
        let mine = held_by("me", 10, 15);
        assert_eq!(
            decide(Some(&mine), "me", at(100)),
            Decision::Renew,
            "ours, even late"
        );
        let fresh = held_by("other", 90, 15);
        assert_eq!(
            decide(Some(&fresh), "me", at(100)),
            Decision::Wait {
                holder: "other".into()
            }
        );
        assert_eq!(
            decide(Some(&fresh), "me", at(104)),
            Decision::Wait {
                holder: "other".into()
            },
            "one second before expiry"
        );
        assert_eq!(
            decide(Some(&fresh), "me", at(105)),
            Decision::Take,
            "expired"
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let other = held_by("other", 10, 15);
        let taken = next_spec(Some(&other), &Decision::Take, &cfg(), at(100)).unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(taken.lease_duration_seconds, Some(15));

        let renewed = next_spec(Some(&taken), &Decision::Renew, &cfg(), at(105)).unwrap();
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));

        let first = next_spec(None, &Decision::Take, &cfg(), at(1)).unwrap();
        assert_eq!(
            first.lease_transitions,
            Some(0),
            "a new Lease has no transition"
        );
        let wait = Decision::Wait {
            holder: "other".into(),
        };
        assert_eq!(next_spec(Some(&other), &wait, &cfg(), at(1)), None);
    }
}
