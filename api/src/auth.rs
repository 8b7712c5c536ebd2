//! Token authentication for the gRPC services: when a token is configured, every request
//! must carry it, either as Pixie's clients send API keys (`pixie-api-key` metadata) or
//! as a bearer token. Kelvin's public API checks the API key with it; the PEM's internal
//! services check the service token that Kelvin and the operator present ([`Bearer`]).

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::secret::{ExposeSecret as _, SecretString};

/// Checks each request for the configured token.
#[derive(Clone, Debug)]
pub struct TokenCheck {
    token: Option<Arc<SecretString>>,
    /// Where a caller without the key finds it, said in the refusal.
    hint: Arc<str>,
}

impl TokenCheck {
    /// Requires `token` on every request; `None` lets every request through (a listener
    /// told `--allow-unauthenticated`).
    #[must_use]
    pub fn new(token: Option<SecretString>) -> Self {
        Self {
            token: token.map(Arc::new),
            hint: Arc::from(""),
        }
    }

    /// Adds `hint` (where the key is, how to get it) to the message of a refused request.
    #[must_use]
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.hint = Arc::from(hint);
        self
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds `authorization: Bearer <token>` to every request of a client; nothing without a
/// token.
#[derive(Clone, Default)]
pub struct Bearer {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the value: debug output reaches logs.
        f.write_str(if self.header.is_some() {
            "Bearer(<token>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// Presents `token`.
    ///
    /// # Errors
    /// A message when the token is not printable ASCII (it cannot be sent in metadata).
    pub fn new(token: Option<&SecretString>) -> Result<Self, String> {
        let header = token
            .map(|t| {
                let mut value: tonic::metadata::MetadataValue<_> =
                    format!("Bearer {}", t.expose_secret())
                        .parse()
                        .map_err(|_| "the token must be printable ASCII".to_owned())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

impl Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let metadata = request.metadata();
        let api_key = metadata.get("pixie-api-key").map(|v| v.as_bytes());
        let bearer = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::as_bytes);
        let presented = api_key.or(bearer);
        let hint = if self.hint.is_empty() {
            String::new()
        } else {
            format!("; {}", self.hint)
        };
        match presented {
            Some(token) if same(token, expected.expose_secret().as_bytes()) => Ok(request),
            // Never echo what was sent: it may be someone's credential.
            Some(_) => Err(Status::unauthenticated(format!(
                "the key or token is not valid{hint}"
            ))),
            None => Err(Status::unauthenticated(format!(
                "this service needs a key: send it as `pixie-api-key` metadata or as \
                 `authorization: Bearer <key>`{hint}"
            ))),
        }
    }
}
