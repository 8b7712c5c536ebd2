//! Token authentication for the gRPC services: when a token is configured, every request
//! must carry it, either as Pixie's clients send API keys (`pixie-api-key` metadata) or
//! as a bearer token. Kelvin's public API checks the API key with it; the PEM's internal
//! services check the service token that Kelvin and the operator present ([`Bearer`]).

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks each request for the configured token.
#[derive(Clone)]
pub struct TokenCheck {
    token: Option<String>,
}

impl TokenCheck {
    /// Requires `token` on every request; `None` lets every request through (local mode,
    /// where the API listens on loopback only).
    #[must_use]
    pub fn new(token: Option<String>) -> Self {
        Self { token }
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adds `authorization: Bearer <token>` to every request of a client; nothing without a
/// token.
#[derive(Clone, Debug, Default)]
pub struct Bearer {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Bearer {
    /// Presents `token`.
    ///
    /// # Errors
    /// A message when the token is not printable ASCII (it cannot be sent in metadata).
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        let header = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "the token must be printable ASCII".to_owned())
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
        match presented {
            Some(token) if same(token, expected.as_bytes()) => Ok(request),
            // Never echo what was sent: it may be someone's credential.
            Some(_) => Err(Status::unauthenticated("the key or token is not valid")),
            None => Err(Status::unauthenticated(
                "this service needs a key: send it as `pixie-api-key` metadata or as \
                 `authorization: Bearer <key>`",
            )),
        }
    }
}
