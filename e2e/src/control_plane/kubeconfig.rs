//! Kubeconfig files: the admin's, the control-plane components', each node's and any
//! identity a test acts as. Written as JSON, which every kubeconfig reader accepts.

use std::path::Path;

use base64::Engine as _;
use serde_json::json;

use super::pki::{CertKey, write};
use crate::error::Error;

/// How a kubeconfig's user authenticates.
pub(crate) enum Credentials<'a> {
    /// A client certificate (user from its CN, group from its O).
    Certificate(&'a CertKey),
    /// A bearer token (a ServiceAccount's, from the TokenRequest API).
    Token(&'a str),
}

/// Writes a kubeconfig for `server`, trusting `ca_pem`, authenticating as `credentials`.
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: Credentials<'_>,
) -> Result<(), Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = match credentials {
        Credentials::Certificate(ck) => json!({
            "client-certificate-data": b64(&ck.cert),
            "client-key-data": b64(&ck.key),
        }),
        Credentials::Token(token) => json!({ "token": token }),
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "px-e2e", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "px-e2e", "context": {"cluster": "px-e2e", "user": user}}],
        "current-context": "px-e2e",
    });
    write(path, &config.to_string())
}

/// A `kube::Client` from a kubeconfig file.
pub(crate) async fn client(path: &Path) -> Result<kube::Client, Error> {
    let err = |message: String| Error::Client {
        kubeconfig: path.to_path_buf(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}
