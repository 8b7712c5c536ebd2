//! TLS for this project's gRPC servers and clients, from PEM files: the flags every
//! binary takes, and the tonic configurations they make.
//!
//! A server needs a certificate and its key; with a client CA it also requires each
//! client to present a certificate signed by that CA (mutual TLS, how Kelvin and the
//! PEMs authenticate each other). A client trusts the CA that signed the server's
//! certificate, and may present its own certificate.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How a server is reached over TLS.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// The server's certificate chain (PEM). With --tls-key, the server speaks TLS only.
    #[arg(long, env = "PX_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PX_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept only clients with a certificate signed by this CA (PEM): mutual TLS.
    #[arg(
        long,
        env = "PX_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve without TLS when no certificate is given. Only on a network you trust:
    /// everything, API keys included, travels in the clear.
    #[arg(long, conflicts_with = "tls_cert")]
    pub disable_tls: bool,
}

impl ServerTlsArgs {
    /// The TLS configuration, or `None` when TLS is turned off.
    ///
    /// # Errors
    /// When a file cannot be read, or when there is no certificate and TLS was not
    /// turned off explicitly.
    pub fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            anyhow::ensure!(
                self.disable_tls,
                "no TLS certificate: give --tls-cert and --tls-key, or pass --disable-tls to serve in the clear"
            );
            return Ok(None);
        };
        let identity = Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
        }
        Ok(Some(config))
    }
}

/// A client's TLS settings: whom to trust, and what to present.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA that signed the server's certificate (PEM file); `None` trusts none, so
    /// TLS needs it.
    pub ca: Option<PathBuf>,
    /// The client's own certificate and key (PEM files), for servers that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry, when not the address's host.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The tonic configuration.
    ///
    /// # Errors
    /// When a file cannot be read.
    pub fn config(&self) -> anyhow::Result<ClientTlsConfig> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca, "the CA certificate")?));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(
                read(cert, "the client certificate")?,
                read(key, "the client key")?,
            ));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// A gRPC server builder, speaking TLS when `tls` is given.
///
/// # Errors
/// When the certificate or key is not usable.
pub fn server(tls: Option<ServerTlsConfig>) -> anyhow::Result<tonic::transport::Server> {
    let server = tonic::transport::Server::builder();
    match tls {
        Some(tls) => server.tls_config(tls).context("bad TLS certificate or key"),
        None => Ok(server),
    }
}
