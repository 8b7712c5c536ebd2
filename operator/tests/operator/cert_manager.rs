//! A Vizier pointed at a cert-manager issuer (`spec.certManager`), with stand-in PEMs.
//! cert-manager itself is not available offline, so the test stands in for its
//! controller, with its two kinds' CRDs (schemas reduced to what is used): for each
//! `Certificate` it writes the Secret cert-manager would (`tls.crt`, `tls.key`,
//! `ca.crt`, signed by the issuer's CA, with the names and usages asked for), and it
//! signs each `CertificateRequest`'s CSR into its status. Checked: the Certificates the
//! operator asks for, the pods mounting cert-manager's Secrets, nothing of this Vizier
//! in `px-tls`, the operator's own certificate from one CertificateRequest owned by the
//! Vizier, and the operator reaching both PEMs with it (a Tracepoint `2/2 Running`).

use std::time::Duration;

use base64::Engine as _;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use px_e2e::Cluster;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};

use super::probes::{WEB, apply, jsonpath, uprobe, wait_tp};
use super::vizier::{Scratch, assert_operator_never_refused, ok, start_operator};

const VIZIER: &str = "apiVersion: px.dev/v1alpha1\nkind: Vizier\nmetadata:\n  name: pixie\n  namespace: pl\nspec:\n  version: 0.14.15\n  pemMemoryLimit: 1Gi\n  certManager:\n    issuerRef: {name: corp-ca}\n";

/// cert-manager's two kinds, as CRDs without their full schemas.
fn crds() -> String {
    ["Certificate", "CertificateRequest"]
        .map(|kind| {
            let plural = format!("{}s", kind.to_lowercase());
            format!(
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.cert-manager.io}}\nspec:\n  group: cert-manager.io\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    subresources: {{status: {{}}}}\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n",
                kind.to_lowercase()
            )
        })
        .join("---\n")
}

/// The issuer's CA, as a CA issuer of cert-manager holds it.
struct TestIssuer {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl TestIssuer {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "corp CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem,
        }
    }

    fn usages(spec: &Value) -> Vec<ExtendedKeyUsagePurpose> {
        let asked: Vec<&str> = spec["usages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut out = Vec::new();
        if asked.contains(&"server auth") {
            out.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if asked.contains(&"client auth") {
            out.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        out
    }

    /// What cert-manager writes for a Certificate: `(tls.crt, tls.key)`.
    fn certificate(&self, spec: &Value) -> (String, String) {
        let names: Vec<String> = spec["dnsNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(String::from))
            .collect();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = Self::usages(spec);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// What cert-manager signs for a CertificateRequest.
    fn sign(&self, spec: &Value) -> String {
        let csr = base64::engine::general_purpose::STANDARD
            .decode(spec["request"].as_str().unwrap())
            .unwrap();
        let mut csr =
            CertificateSigningRequestParams::from_pem(std::str::from_utf8(&csr).unwrap()).unwrap();
        csr.params.extended_key_usages = Self::usages(spec);
        csr.signed_by(&self.issuer).unwrap().pem()
    }
}

fn api(cluster: &Cluster, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", kind));
    Api::namespaced_with(cluster.client(), "pl", &resource)
}

/// cert-manager's controller, for this test: answers every Certificate and
/// CertificateRequest of `pl`; counts the requests it signed.
fn stand_in_for_cert_manager(
    cluster: &Cluster,
    signed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let certificates = api(cluster, "Certificate");
    let requests = api(cluster, "CertificateRequest");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(cluster.client(), "pl");
    let issuer = TestIssuer::new();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    tokio::spawn(async move {
        loop {
            for c in certificates
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let spec = &c.data["spec"];
                let name = spec["secretName"].as_str().unwrap_or_default().to_string();
                if matches!(secrets.get_opt(&name).await, Ok(None)) {
                    let (crt, key) = issuer.certificate(spec);
                    let secret = serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "type": "kubernetes.io/tls",
                        "data": {"tls.crt": b64(&crt), "tls.key": b64(&key), "ca.crt": b64(&issuer.ca_pem)},
                    }))
                    .unwrap();
                    let _ = secrets.create(&PostParams::default(), &secret).await;
                }
            }
            for r in requests
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                if r.data.pointer("/status/certificate").is_some() {
                    continue;
                }
                let cert = issuer.sign(&r.data["spec"]);
                let status = json!({"status": {
                    "certificate": b64(&cert),
                    "ca": b64(&issuer.ca_pem),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "Issued", "message": "signed"}],
                }});
                let name = r.metadata.name.clone().unwrap_or_default();
                if requests
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .is_ok()
                {
                    signed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vizier_on_a_cert_manager_issuer_runs_on_its_certificates() {
    let scratch = Scratch::new("cert-manager");
    let cluster = super::probes::start_with(&scratch, VIZIER).await;
    let out = cluster
        .kubectl_stdin(&["apply", "-f", "-"], Some(&crds()))
        .await
        .unwrap();
    assert!(out.success(), "{out:?}");
    ok(
        &cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/certificaterequests.cert-manager.io",
        ],
    )
    .await;
    let signed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cert_manager = stand_in_for_cert_manager(&cluster, signed.clone());
    let operator = start_operator(&cluster, "operator-0").await;
    super::vizier::wait_healthy(&cluster).await;

    // The Certificates the operator asked for.
    let asked = jsonpath(
        &cluster,
        &["certificates", "-n", "pl"],
        "{range .items[*]}{.metadata.name}:{.spec.secretName}:{.spec.issuerRef.name}/{.spec.issuerRef.kind}:{.spec.dnsNames[0]}:{.spec.usages[*]} {end}",
    )
    .await;
    assert!(
        asked.contains("pixie-pem-tls:pixie-pem-tls:corp-ca/Issuer:pixie-pem.pl.svc:digital signature server auth "),
        "{asked}"
    );
    assert!(
        asked.contains("pixie-kelvin-tls:pixie-kelvin-tls:corp-ca/Issuer:pixie-kelvin:digital signature server auth client auth"),
        "{asked}"
    );
    // The pods mount cert-manager's Secrets, and px-tls holds nothing of this Vizier.
    let mounted = jsonpath(
        &cluster,
        &["ds", "pixie-pem", "-n", "pl"],
        "{.spec.template.spec.volumes[?(@.name==\"tls\")].secret.secretName}",
    )
    .await;
    assert_eq!(mounted.trim(), "pixie-pem-tls");
    let px_tls = cluster
        .kubectl(&[
            "get",
            "secret",
            "px-tls",
            "-n",
            "pl",
            "-o",
            "jsonpath={.data}",
        ])
        .await
        .unwrap();
    assert!(!px_tls.stdout.contains("pixie."), "{px_tls:?}");

    // The operator calls both PEMs with the certificate cert-manager signed for it.
    apply(&cluster, WEB).await;
    apply(&cluster, &uprobe("calls", "shop", "calls")).await;
    wait_tp(&cluster, "shop", "calls", "2/2", "Running").await;
    assert!(signed.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // One request for its one certificate, owned by the Vizier (it goes with it).
    let requests = jsonpath(
        &cluster,
        &["certificaterequests", "-n", "pl"],
        "{range .items[*]}{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}:{.spec.usages[*]} {end}",
    )
    .await;
    assert_eq!(
        requests.trim(),
        "Vizier/pixie:digital signature client auth"
    );

    cert_manager.abort();
    operator.abort();
    assert_operator_never_refused(&cluster);
    cluster.stop().await;
}
