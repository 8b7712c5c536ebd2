//! Certificates from cert-manager, for a Vizier with `spec.certManager`: instead of the
//! operator's own CA in `px-tls`, a `Certificate` for the PEMs and one for Kelvin
//! (cert-manager writes and renews the Secrets the pods mount), and a
//! `CertificateRequest` for the operator's own client certificate: the operator makes
//! the key and the CSR and reads the signed certificate and the CA from the request's
//! status. Its key never leaves its memory, and it reads no Secret for it. The requests
//! are owned by the Vizier and go with it (one per renewal: the operator deletes
//! nothing).

use std::time::Duration;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use px_crds::{CertManager, Vizier};
use serde_json::{Value, json};

use crate::certs::{self, Issued, Role};
use crate::desired::{self, FIELD_MANAGER};
use crate::error::Error;

/// The Secret cert-manager writes `role`'s certificate into: `<vizier>-pem-tls` or
/// `<vizier>-kelvin-tls`, with `tls.crt`, `tls.key` and `ca.crt`.
pub fn secret_name(vizier: &str, role: Role) -> String {
    format!("{vizier}-{}-tls", role.key())
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", kind))
}

fn issuer_ref(cm: &CertManager) -> Value {
    json!({
        "name": cm.issuer_ref.name,
        "kind": cm.issuer_ref.kind.as_deref().unwrap_or("Issuer"),
        "group": cm.issuer_ref.group.as_deref().unwrap_or("cert-manager.io"),
    })
}

/// cert-manager's names for the key usages of `role`.
fn usages(role: Role) -> Vec<&'static str> {
    match role {
        Role::Pem => vec!["digital signature", "server auth"],
        Role::Kelvin => vec!["digital signature", "server auth", "client auth"],
        Role::Operator => vec!["digital signature", "client auth"],
    }
}

/// The `Certificate`s of `vz` (PEMs, Kelvin), owned by it, with the names, usages and
/// lifetime the operator's own CA would give them; renewed by cert-manager with a third
/// of their life left, with a new key each time.
pub fn certificates(
    vz: &Vizier,
    cm: &CertManager,
    lifetime: Duration,
) -> Result<Vec<DynamicObject>, Error> {
    let name = vz.metadata.name.clone().unwrap_or_default();
    let ns = vz.metadata.namespace.clone().unwrap_or_default();
    let owner = desired::owner_reference(vz)?;
    [Role::Pem, Role::Kelvin]
        .into_iter()
        .map(|role| {
            let (common_name, dns_names) = match role {
                Role::Pem => ("vizier-pem", vec![certs::pem_server_name(&ns, &name)]),
                _ => ("kelvin", certs::kelvin_names(&ns, &name)),
            };
            let object = json!({
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {
                    "name": secret_name(&name, role),
                    "namespace": ns,
                    "labels": {
                        "app.kubernetes.io/instance": name,
                        "app.kubernetes.io/part-of": "px",
                        "app.kubernetes.io/managed-by": FIELD_MANAGER,
                        desired::VIZIER_LABEL: name,
                    },
                    "ownerReferences": [owner],
                },
                "spec": {
                    "secretName": secret_name(&name, role),
                    "commonName": common_name,
                    "dnsNames": dns_names,
                    "usages": usages(role),
                    "duration": format!("{}s", lifetime.as_secs()),
                    "renewBefore": format!("{}s", lifetime.as_secs() / 3),
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "issuerRef": issuer_ref(cm),
                },
            });
            serde_json::from_value(object).map_err(|source| Error::Encode {
                what: "a cert-manager Certificate",
                source,
            })
        })
        .collect()
}

/// Applies `vz`'s Certificates. Without cert-manager's CRDs the error says to install it.
pub(crate) async fn apply(
    client: &kube::Client,
    vz: &Vizier,
    cm: &CertManager,
    lifetime: Duration,
) -> Result<(), Error> {
    let ns = vz.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &resource("Certificate"));
    for certificate in certificates(vz, cm, lifetime)? {
        let name = certificate.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&certificate),
        )
        .await
        .map_err(|source| Error::CertManager {
            what: format!("cannot apply Certificate {ns}/{name}"),
            source,
        })?;
    }
    Ok(())
}

/// A request for the operator's client certificate, made and not yet answered.
pub(crate) struct Pending {
    name: String,
    key_pem: String,
    requested_at: i64,
}

/// What to do with the operator's identity for one Vizier.
pub(crate) enum Answer {
    /// Signed: the CA certificate, and the certificate with its key.
    Signed(String, Issued),
    /// Not yet: ask again later.
    Waiting,
    /// Refused or failed: the reason; a new request is made next time.
    Failed(String),
}

/// Asks cert-manager to sign a new client certificate for the operator: a key made
/// here, a CSR, a `CertificateRequest` owned by the Vizier.
pub(crate) async fn request(
    client: &kube::Client,
    vz: &Vizier,
    cm: &CertManager,
    now: i64,
    lifetime: Duration,
) -> Result<Pending, Error> {
    use base64::Engine as _;
    let name = vz.metadata.name.clone().unwrap_or_default();
    let ns = vz.metadata.namespace.clone().unwrap_or_default();
    let (key_pem, csr_pem) =
        certs::client_csr("px-operator").map_err(|source| Error::Certificate {
            vizier: name.clone(),
            source,
        })?;
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {
            "generateName": format!("{name}-operator-"),
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/part-of": "px",
                "app.kubernetes.io/managed-by": FIELD_MANAGER,
                desired::VIZIER_LABEL: name,
            },
            "ownerReferences": [desired::owner_reference(vz)?],
        },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(csr_pem),
            "usages": usages(Role::Operator),
            "duration": format!("{}s", lifetime.as_secs()),
            "issuerRef": issuer_ref(cm),
        },
    }))
    .map_err(|source| Error::Encode {
        what: "a cert-manager CertificateRequest",
        source,
    })?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &resource("CertificateRequest"));
    let made = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|source| Error::CertManager {
            what: format!("cannot create a CertificateRequest in {ns}"),
            source,
        })?;
    Ok(Pending {
        name: made.metadata.name.unwrap_or_default(),
        key_pem,
        requested_at: now,
    })
}

/// Reads the answer to `pending`.
pub(crate) async fn answer(
    client: &kube::Client,
    ns: &str,
    pending: &Pending,
    lifetime: Duration,
) -> Result<Answer, Error> {
    use base64::Engine as _;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &resource("CertificateRequest"));
    let Some(request) = api
        .get_opt(&pending.name)
        .await
        .map_err(|source| Error::CertManager {
            what: format!("cannot read CertificateRequest {ns}/{}", pending.name),
            source,
        })?
    else {
        return Ok(Answer::Failed(format!(
            "CertificateRequest {ns}/{} is gone",
            pending.name
        )));
    };
    let status = request.data.get("status").cloned().unwrap_or_default();
    let condition = |t: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t && c["status"] == "True")
            .map(|c| c["message"].as_str().unwrap_or("").to_string())
    };
    let decode = |field: &str| {
        status[field]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    let answer = if let Some(why) = condition("Denied").or_else(|| condition("InvalidRequest")) {
        Answer::Failed(format!(
            "CertificateRequest {ns}/{} was refused: {why}",
            pending.name
        ))
    } else if let Some(why) = status["failureTime"]
        .as_str()
        .map(|_| condition("Ready").unwrap_or_default())
    {
        Answer::Failed(format!(
            "CertificateRequest {ns}/{} failed: {why}",
            pending.name
        ))
    } else if condition("Ready").is_none() {
        return Ok(Answer::Waiting);
    } else {
        match (decode("certificate"), decode("ca")) {
            (Some(cert_pem), Some(ca)) => Answer::Signed(
                ca,
                Issued {
                    cert_pem,
                    key_pem: pending.key_pem.clone(),
                    not_after: pending
                        .requested_at
                        .saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX)),
                },
            ),
            _ => Answer::Failed(format!(
                "CertificateRequest {ns}/{} is Ready without a certificate and a CA (status.certificate, status.ca): the issuer must give its CA",
                pending.name
            )),
        }
    };
    Ok(answer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_certificates_ask_the_issuer_for_what_the_operators_ca_would_issue() {
        let vz: Vizier = serde_json::from_value(json!({
            "apiVersion": "px.dev/v1alpha1", "kind": "Vizier",
            "metadata": {"name": "pixie", "namespace": "pl", "uid": "u1"},
            "spec": {"certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}},
        }))
        .unwrap();
        let cm = vz.spec.cert_manager.clone().unwrap();
        let made = certificates(&vz, &cm, certs::DEFAULT_LIFETIME).unwrap();
        let spec = |i: usize| made[i].data["spec"].clone();
        assert_eq!(made[0].metadata.name.as_deref(), Some("pixie-pem-tls"));
        assert_eq!(spec(0)["secretName"], "pixie-pem-tls");
        assert_eq!(spec(0)["dnsNames"], json!(["pixie-pem.pl.svc"]));
        assert_eq!(
            spec(0)["usages"],
            json!(["digital signature", "server auth"])
        );
        assert_eq!(
            spec(0)["issuerRef"],
            json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(spec(0)["duration"], "7776000s");
        assert_eq!(spec(0)["renewBefore"], "2592000s");
        assert_eq!(made[1].metadata.name.as_deref(), Some("pixie-kelvin-tls"));
        assert!(
            spec(1)["usages"]
                .as_array()
                .unwrap()
                .contains(&json!("client auth"))
        );
        assert!(
            spec(1)["dnsNames"]
                .as_array()
                .unwrap()
                .contains(&json!("pixie-kelvin.pl.svc"))
        );
        let owner = &made[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Vizier", Some(true))
        );
    }
}
