//! Keeps each Vizier's CA and certificates in the namespace's [`TLS_SECRET`] Secret
//! (made by [`crate::certs`]), renews them before they expire, and gives the operator
//! its own client certificate to call the PEMs with.
//!
//! The Secret is shared by the Viziers of a namespace, like `px-pem-token`: each
//! Vizier's data keys (`<vizier>.ca.crt`, `<vizier>.pem.crt`, ...) are applied under
//! its own field manager, so the Viziers' parts merge, and each Vizier is one of its
//! owners. The PEM and Kelvin pods mount only their own keys (volume `items`), never
//! the CA's key. The operator reads this Secret by name and no other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use px_crds::Vizier;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::certs::{self, Ca, Issued, Role, TLS_SECRET};
use crate::context::Context;
use crate::desired;
use crate::error::Error;

/// The data key of `vizier`'s `part` (`ca.crt`, `pem.key`, ...).
pub fn data_key(vizier: &str, part: &str) -> String {
    format!("{vizier}.{part}")
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|t| !t.is_empty())
}

/// A certificate of `role` as the Secret holds it, if it is there and not due for
/// renewal at `now`.
fn current(
    data: &BTreeMap<String, ByteString>,
    vizier: &str,
    role: Role,
    now: i64,
    lifetime: Duration,
) -> Option<Issued> {
    let part = |p: &str| text(data, &data_key(vizier, &format!("{}.{p}", role.key())));
    let not_after: i64 = part("not-after")?.parse().ok()?;
    (now < certs::renew_at(not_after, lifetime)).then_some(Issued {
        cert_pem: part("crt")?,
        key_pem: part("key")?,
        not_after,
    })
}

/// The DNS names and common name of `role`'s certificate.
fn subject(namespace: &str, vizier: &str, role: Role) -> (&'static str, Vec<String>) {
    match role {
        Role::Pem => (
            "vizier-pem",
            vec![certs::pem_server_name(namespace, vizier)],
        ),
        Role::Kelvin => ("kelvin", certs::kelvin_names(namespace, vizier)),
        Role::Operator => ("px-operator", Vec::new()),
    }
}

/// A Vizier's part of the TLS Secret, what was (re)issued in it, and when the next
/// renewal is due (Unix seconds).
type Plan = (BTreeMap<String, ByteString>, Vec<&'static str>, i64);

/// What the Secret should hold for `vizier` at `now`, and whether it changed: the CA
/// kept (or made, when absent or unreadable), the PEMs' and Kelvin's certificates kept
/// until they are due for renewal (or when the CA changed). Also returns the time of the
/// next renewal.
fn plan(
    data: &BTreeMap<String, ByteString>,
    namespace: &str,
    vizier: &str,
    now: i64,
    lifetime: Duration,
) -> Result<Plan, Error> {
    let cert_error = |source| Error::Certificate {
        vizier: vizier.to_string(),
        source,
    };
    let mut renewed = Vec::new();
    let read = text(data, &data_key(vizier, "ca.crt"))
        .zip(text(data, &data_key(vizier, "ca.key")))
        .and_then(|(c, k)| Ca::read(namespace, vizier, &c, &k));
    let ca = match read {
        Some(ca) => ca,
        None => {
            renewed.push("CA");
            Ca::generate(namespace, vizier, now).map_err(cert_error)?
        }
    };
    let new_ca = !renewed.is_empty();
    let mut out = BTreeMap::new();
    let mut put = |part: &str, value: &str| {
        out.insert(
            data_key(vizier, part),
            ByteString(value.as_bytes().to_vec()),
        );
    };
    put("ca.crt", &ca.cert_pem);
    put("ca.key", &ca.key_pem);
    let mut next = i64::MAX;
    for role in [Role::Pem, Role::Kelvin] {
        let kept = current(data, vizier, role, now, lifetime).filter(|_| !new_ca);
        let issued = match kept {
            Some(issued) => issued,
            None => {
                renewed.push(role.key());
                let (cn, names) = subject(namespace, vizier, role);
                ca.issue(role, cn, &names, now, lifetime)
                    .map_err(cert_error)?
            }
        };
        next = next.min(certs::renew_at(issued.not_after, lifetime));
        put(&format!("{}.crt", role.key()), &issued.cert_pem);
        put(&format!("{}.key", role.key()), &issued.key_pem);
        put(
            &format!("{}.not-after", role.key()),
            &issued.not_after.to_string(),
        );
    }
    Ok((out, renewed, next))
}

/// Makes sure `vz`'s CA and certificates are in the namespace's TLS Secret and none is
/// due for renewal; returns how long until one is.
pub(crate) async fn ensure(vz: &Vizier, ns: &str, ctx: &Context) -> Result<Duration, Error> {
    if let Some(cm) = &vz.spec.cert_manager {
        // cert-manager renews what it issues; nothing to come back for.
        crate::cert_manager::apply(&ctx.client, vz, cm, ctx.certificate_lifetime).await?;
        return Ok(Duration::MAX);
    }
    let name = vz.metadata.name.clone().unwrap_or_default();
    let data = secret_data(ctx, ns).await?;
    let now = now();
    let (wanted, renewed, next) = plan(&data, ns, &name, now, ctx.certificate_lifetime)?;
    if !renewed.is_empty() {
        let secret = desired::tls_secret(vz, wanted)?;
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(
            TLS_SECRET,
            &PatchParams::apply(&desired::shared_secret_manager(&name)),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|source| Error::WriteSecret {
            name: TLS_SECRET.to_string(),
            source,
        })?;
        ctx.publish(
            vz,
            EventType::Normal,
            "CertificatesIssued",
            format!(
                "issued {} in Secret {TLS_SECRET} (valid {}s, renewed with a third left)",
                renewed.join(", "),
                ctx.certificate_lifetime.as_secs()
            ),
        )
        .await;
    }
    Ok(Duration::from_secs(
        u64::try_from(next.saturating_sub(now)).unwrap_or(0),
    ))
}

async fn secret_data(ctx: &Context, ns: &str) -> Result<BTreeMap<String, ByteString>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = api
        .get_opt(TLS_SECRET)
        .await
        .map_err(|source| Error::Read {
            what: "the TLS Secret",
            source,
        })?;
    Ok(secret.and_then(|s| s.data).unwrap_or_default())
}

/// How the operator calls one Vizier's PEMs: trusting its CA, asking for the PEMs'
/// name, presenting the operator's certificate. `fingerprint` tells configurations
/// apart (a channel made with an older one is not reused).
#[derive(Clone)]
pub struct PemTls {
    /// The tonic configuration.
    pub config: ClientTlsConfig,
    /// Which CA and client certificate it holds.
    pub fingerprint: u64,
}

// Compared by what they hold, so that PEMs sort and compare as before.
impl PartialEq for PemTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for PemTls {}

impl PartialOrd for PemTls {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PemTls {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fingerprint.cmp(&other.fingerprint)
    }
}

impl std::fmt::Debug for PemTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The operator's client certificates, per (namespace, Vizier), with the CA that
/// issued each; issued in memory, never stored.
#[derive(Default)]
pub(crate) struct OperatorIdentities(Mutex<HashMap<(String, String), (String, Issued)>>);

/// The operator's requests to cert-manager in flight, per (namespace, Vizier).
#[derive(Default)]
pub(crate) struct PendingRequests(
    tokio::sync::Mutex<HashMap<(String, String), crate::cert_manager::Pending>>,
);

/// The TLS to call Vizier `vizier`'s PEMs in `ns` with, or `None` when there is no
/// certificate yet (the Vizier has not been reconciled, or cert-manager has not
/// answered).
pub(crate) async fn pem_tls(
    ctx: &Context,
    ns: &str,
    vizier: &str,
) -> Result<Option<PemTls>, Error> {
    let vz = Api::<Vizier>::namespaced(ctx.client.clone(), ns)
        .get_opt(vizier)
        .await
        .map_err(|source| Error::Read {
            what: "the Vizier",
            source,
        })?;
    if let Some((vz, cm)) = vz
        .as_ref()
        .and_then(|v| Some((v, v.spec.cert_manager.as_ref()?)))
    {
        return Ok(from_cert_manager(ctx, vz, cm, ns, vizier)
            .await?
            .map(|(ca, issued)| client_config(ns, vizier, ca, issued)));
    }
    let data = secret_data(ctx, ns).await?;
    let Some((ca_cert, ca_key)) =
        text(&data, &data_key(vizier, "ca.crt")).zip(text(&data, &data_key(vizier, "ca.key")))
    else {
        return Ok(None);
    };
    let now = now();
    let lifetime = ctx.certificate_lifetime;
    let key = (ns.to_string(), vizier.to_string());
    let mut identities = ctx
        .identities
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let fresh = identities
        .get(&key)
        .filter(|(ca, issued)| *ca == ca_cert && now < certs::renew_at(issued.not_after, lifetime));
    let issued = match fresh {
        Some((_, issued)) => issued.clone(),
        None => {
            let Some(ca) = Ca::read(ns, vizier, &ca_cert, &ca_key) else {
                return Ok(None);
            };
            let (cn, names) = subject(ns, vizier, Role::Operator);
            let issued = ca
                .issue(Role::Operator, cn, &names, now, lifetime)
                .map_err(|source| Error::Certificate {
                    vizier: vizier.to_string(),
                    source,
                })?;
            identities.insert(key, (ca_cert.clone(), issued.clone()));
            issued
        }
    };
    drop(identities);
    Ok(Some(client_config(ns, vizier, ca_cert, issued)))
}

/// The operator's certificate for `vz` from cert-manager: the one it has while it is
/// not due for renewal; a new request when it is (the current one still serves until
/// the answer comes); `None` until the first answer.
async fn from_cert_manager(
    ctx: &Context,
    vz: &Vizier,
    cm: &px_crds::CertManager,
    ns: &str,
    vizier: &str,
) -> Result<Option<(String, Issued)>, Error> {
    use crate::cert_manager::{Answer, answer, request};
    let now = now();
    let lifetime = ctx.certificate_lifetime;
    let key = (ns.to_string(), vizier.to_string());
    let current = ctx
        .identities
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .cloned();
    if let Some((_, issued)) = &current
        && now < certs::renew_at(issued.not_after, lifetime)
    {
        return Ok(current);
    }
    // One request at a time per Vizier: reconciles of several Tracepoints ask at once.
    let mut pending = ctx.pending.0.lock().await;
    match pending.get(&key) {
        None => {
            let made = request(&ctx.client, vz, cm, now, lifetime).await?;
            pending.insert(key, made);
            Ok(current)
        }
        Some(waiting) => match answer(&ctx.client, ns, waiting, lifetime).await? {
            Answer::Waiting => Ok(current),
            Answer::Signed(ca, issued) => {
                pending.remove(&key);
                let signed = (ca, issued);
                ctx.identities
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, signed.clone());
                Ok(Some(signed))
            }
            Answer::Failed(why) => {
                pending.remove(&key);
                ctx.publish(vz, EventType::Warning, "CertificateRequestFailed", why)
                    .await;
                Ok(current)
            }
        },
    }
}

fn client_config(ns: &str, vizier: &str, ca_cert: String, issued: Issued) -> PemTls {
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ca_cert.hash(&mut h);
        issued.cert_pem.hash(&mut h);
        h.finish()
    };
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_cert))
        .identity(Identity::from_pem(issued.cert_pem, issued.key_pem))
        .domain_name(certs::pem_server_name(ns, vizier));
    PemTls {
        config,
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn certificates_are_kept_until_a_third_of_their_life_is_left() {
        let (first, renewed, next) = plan(&BTreeMap::new(), "pl", "pixie", NOW, 3 * DAY).unwrap();
        assert_eq!(renewed, ["CA", "pem", "kelvin"]);
        assert_eq!(next, NOW + 2 * 86_400);
        let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "pixie.ca.crt",
                "pixie.ca.key",
                "pixie.kelvin.crt",
                "pixie.kelvin.key",
                "pixie.kelvin.not-after",
                "pixie.pem.crt",
                "pixie.pem.key",
                "pixie.pem.not-after"
            ]
        );

        // A day on: nothing to do, and the next renewal a day away.
        let (same, renewed, next) = plan(&first, "pl", "pixie", NOW + 86_400, 3 * DAY).unwrap();
        assert!(renewed.is_empty(), "{renewed:?}");
        assert_eq!(same, first);
        assert_eq!(next, NOW + 2 * 86_400);

        // Two days on: both leaves renewed by the same CA.
        let (later, renewed, _) = plan(&first, "pl", "pixie", NOW + 2 * 86_400, 3 * DAY).unwrap();
        assert_eq!(renewed, ["pem", "kelvin"]);
        assert_eq!(later["pixie.ca.crt"], first["pixie.ca.crt"]);
        assert_ne!(later["pixie.pem.crt"], first["pixie.pem.crt"]);

        // Another Vizier's part is its own; a CA key edited into garbage is replaced,
        // and so is every certificate it issued.
        let (other, renewed, _) = plan(&first, "pl", "other", NOW, 3 * DAY).unwrap();
        assert_eq!(renewed, ["CA", "pem", "kelvin"]);
        assert!(other.keys().all(|k| k.starts_with("other.")));
        let mut broken = first.clone();
        broken.insert("pixie.ca.key".into(), ByteString(b"junk".to_vec()));
        let (_, renewed, _) = plan(&broken, "pl", "pixie", NOW, 3 * DAY).unwrap();
        assert_eq!(renewed, ["CA", "pem", "kelvin"]);
    }
}
