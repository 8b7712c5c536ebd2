//! API authentication: when a token is configured, every request must carry it, either
//! as Pixie's clients send API keys (`pixie-api-key` metadata) or as a bearer token.

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
            Some(_) => Err(Status::unauthenticated("the API key is not valid")),
            None => Err(Status::unauthenticated(
                "this API needs a key: send it as `pixie-api-key` metadata or as \
                 `authorization: Bearer <key>`",
            )),
        }
    }
}
