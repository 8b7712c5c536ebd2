//! Reaching the API that `px local` (or Kelvin) serves: address, TLS, API key. Shared by
//! `px run` and `px trace`.

use std::path::PathBuf;

use anyhow::Context as _;
use px_api::secret::ExposeSecret as _;

use crate::run::DEFAULT_ADDR;

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ApiArgs {
    /// Address of the API (Kelvin; `px local` serves it there): HOST:PORT, or a URL;
    /// https:// (or --tls-ca) connects with TLS.
    #[arg(long, default_value = DEFAULT_ADDR, global = true)]
    pub(crate) addr: String,
    /// Trust the API's certificate when this CA (PEM file) signed it; implies TLS.
    #[arg(long, env = "PX_TLS_CA", value_name = "FILE", global = true)]
    pub(crate) tls_ca: Option<PathBuf>,
    /// The name the API's certificate carries, when not the host of --addr.
    #[arg(long, global = true)]
    pub(crate) tls_server_name: Option<String>,
    /// The file holding the API key [default: the key in the environment variable
    /// PX_API_KEY, else the file `px local` writes, /run/px/api-key, when readable]. Never
    /// on the command line, which every user of the machine can read.
    #[arg(long, env = "PX_API_KEY_FILE", value_name = "FILE", global = true)]
    pub(crate) api_key_file: Option<PathBuf>,
}

impl Default for ApiArgs {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.to_owned(),
            tls_ca: None,
            tls_server_name: None,
            api_key_file: None,
        }
    }
}

impl ApiArgs {
    /// A connection to the API at `--addr`, with TLS when asked for.
    pub(crate) async fn connect(&self) -> anyhow::Result<tonic::transport::Channel> {
        let tls = self.tls_ca.is_some() || self.addr.starts_with("https://");
        let url = if self.addr.contains("://") {
            self.addr.clone()
        } else {
            format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url)
            .with_context(|| format!("{:?} is not an address like 127.0.0.1:50300", self.addr))?;
        if tls {
            let config = px_api::tls::ClientTls {
                ca: self.tls_ca.clone(),
                identity: None,
                server_name: self.tls_server_name.clone(),
            }
            .config()?;
            endpoint = endpoint.tls_config(config)?;
        }
        endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the API at {}; is `px local` running?",
                self.addr
            )
        })
    }

    /// Adds the API key to a request, when there is one.
    pub(crate) fn authorize<T>(&self, request: &mut tonic::Request<T>) -> anyhow::Result<()> {
        if let Some(key) = crate::key_file::caller_key(self.api_key_file.as_deref())? {
            let mut value: tonic::metadata::MetadataValue<_> = key
                .expose_secret()
                .parse()
                .context("the API key must be printable ASCII")?;
            value.set_sensitive(true);
            request.metadata_mut().insert("pixie-api-key", value);
        }
        Ok(())
    }
}

/// A refusal of the API as a user reads it: its code and its message, which says what to
/// do (where the key is, for UNAUTHENTICATED).
pub(crate) fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the API refused: {:?}: {}", status.code(), status.message())
}
