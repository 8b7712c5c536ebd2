//! API errors, rendered as the `meta/v1 Status` bodies a real API server sends.

use serde_json::{Value, json};

/// One `details.causes` entry of a Status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldManagerConflict`, ...
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) field: String,
}

/// A failed API call: the HTTP code, the Status reason and message, and optional details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

/// What `(group, kind)` a resource error names, as in `details.group`/`details.kind`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Qualified<'a> {
    pub(crate) group: &'a str,
    /// The plural resource name (`pods`), as NotFound and AlreadyExists name it.
    pub(crate) plural: &'a str,
    pub(crate) kind: &'a str,
}

impl Qualified<'_> {
    /// `pods` or `tracepoints.px.dev`: how messages name a resource.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Pod` or `Tracepoint.px.dev`: how Invalid messages name a kind.
    fn kind_name(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json, application/apply-patch+yaml; got {content_type:?}"
            ),
        )
    }

    pub(crate) fn not_found(q: Qualified<'_>, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", q.resource()),
        );
        e.details = Some(json!({"name": name, "group": q.group, "kind": q.plural}));
        e
    }

    pub(crate) fn already_exists(q: Qualified<'_>, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", q.resource()),
        );
        e.details = Some(json!({"name": name, "group": q.group, "kind": q.plural}));
        e
    }

    /// The optimistic-concurrency failure for a stale `resourceVersion`.
    pub(crate) fn stale(q: Qualified<'_>, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                q.resource()
            ),
        );
        e.details = Some(json!({"name": name, "group": q.group, "kind": q.plural}));
        e
    }

    /// 422 Invalid with one cause per field error, as `errors.NewInvalid` builds it.
    pub(crate) fn invalid(q: Qualified<'_>, name: &str, causes: Vec<Cause>) -> Self {
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} {name:?} is invalid: {summary}", q.kind_name()),
        );
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        e.details = Some(json!({"name": name, "group": q.group, "kind": q.kind, "causes": causes}));
        e
    }

    /// 409 for server-side apply conflicts; `causes` carry `FieldManagerConflict`.
    pub(crate) fn apply_conflict(message: String, causes: Vec<Cause>) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        e.details = Some(json!({"causes": causes}));
        e
    }

    /// 410 Gone for a watch or list from a resourceVersion older than the kept window.
    pub(crate) fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 422 for a patch that cannot be applied, as the server reports json-patch errors.
    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// The Status object.
    pub(crate) fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
