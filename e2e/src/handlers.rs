//! Routing of API requests to discovery, OpenAPI and the resource verbs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Response};
use serde_json::{Value, json};

use crate::http::{ResponseBody, error_response, json_response, stream_response};
use crate::resources::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::status::{ApiError, ApiResult};
use crate::store::{FieldValidation, PatchKind, WriteOptions, Written};
use crate::table::{self, IncludeObject};
use crate::{discovery, openapi, watch};

/// One parsed request.
pub(crate) struct Request<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) query: HashMap<String, String>,
    pub(crate) accept: &'a str,
    pub(crate) content_type: &'a str,
    pub(crate) user_agent: &'a str,
    pub(crate) body: Bytes,
}

impl Request<'_> {
    fn q(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.q(key), Some("true") | Some("1"))
    }

    fn json_body(&self) -> ApiResult<Value> {
        if self.body.is_empty() {
            return Ok(json!({}));
        }
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            // Typed clients (`kubectl create deployment ...`) send protobuf; only the
            // simplest kinds are decoded (see `create_body`).
            return Err(ApiError::unsupported_media_type(self.content_type));
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            // YAML bodies (apply-patch+yaml written by hand) are not parsed: the clients
            // this emulator serves send JSON, which is valid YAML.
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        })
    }
}

impl Request<'_> {
    /// A create body: JSON, or protobuf for the few core kinds `protobuf` decodes.
    fn create_body(&self, res: &Resource) -> ApiResult<Value> {
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
            && res.group.is_empty()
        {
            return crate::protobuf::decode(&self.body, &res.kind)
                .ok_or_else(|| ApiError::unsupported_media_type(self.content_type));
        }
        self.json_body()
    }
}

/// Where a resource request points.
struct Target {
    res: Arc<Resource>,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Handles one request; never panics on bad input.
pub(crate) fn handle(shared: &Arc<Shared>, req: Request<'_>) -> Response<ResponseBody> {
    match route(shared, &req) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn route(shared: &Arc<Shared>, req: &Request<'_>) -> ApiResult<Response<ResponseBody>> {
    let path = req.path.trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |r: Value| -> ApiResult<Response<ResponseBody>> {
        if req.method == Method::GET {
            Ok(json_response(200, &r))
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        ["version"] => get_only(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => Ok(Response::new(http_body_util::BodyExt::boxed(
            http_body_util::Full::new(Bytes::from_static(b"ok")),
        ))),
        ["api"] => get_only(discovery::core_versions(&shared.addr.to_string())),
        ["apis"] => get_only(discovery::groups(shared.lock().resources())),
        ["apis", group] => get_only(
            discovery::group_doc(shared.lock().resources(), group)
                .ok_or_else(ApiError::not_found_path)?,
        ),
        ["api", version] => get_only(
            discovery::resource_list(shared.lock().resources(), "", version)
                .ok_or_else(ApiError::not_found_path)?,
        ),
        ["apis", group, version] => get_only(
            discovery::resource_list(shared.lock().resources(), group, version)
                .ok_or_else(ApiError::not_found_path)?,
        ),
        ["openapi", "v3"] => get_only(openapi::root(shared.lock().resources())),
        ["openapi", "v3", "api", version] => openapi_doc(shared, "", version),
        ["openapi", "v3", "apis", group, version] => openapi_doc(shared, group, version),
        ["api", version, rest @ ..] => resource_request(shared, req, "", version, rest),
        ["apis", group, version, rest @ ..] => resource_request(shared, req, group, version, rest),
        _ => Err(ApiError::not_found_path()),
    }
}

fn openapi_doc(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
) -> ApiResult<Response<ResponseBody>> {
    let store = shared.lock();
    if !openapi::serves(store.resources(), group, version) {
        return Err(ApiError::not_found_path());
    }
    Ok(json_response(
        200,
        &openapi::group_version_doc(store.resources(), group, version),
    ))
}

fn resolve(shared: &Arc<Shared>, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let store = shared.lock();
    let find = |plural: &str| store.resource(group, version, plural);
    let target = |res: Arc<Resource>, ns: Option<&str>, tail: &[&str]| -> ApiResult<Target> {
        if tail.len() > 2 {
            return Err(ApiError::not_found_path());
        }
        let sub = tail.get(1).map(|s| s.to_string());
        if let Some(s) = &sub
            && !(s == "status" && res.has_status)
            && !crate::subresources::has(&res, s)
        {
            return Err(ApiError::not_found_path());
        }
        Ok(Target {
            version: version.to_string(),
            namespace: ns.map(String::from),
            name: tail.first().map(|s| s.to_string()),
            subresource: sub,
            res,
        })
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            target(
                find(plural).ok_or_else(ApiError::not_found_path)?,
                Some(ns),
                tail,
            )
        }
        [plural, tail @ ..] => {
            let res = find(plural).ok_or_else(ApiError::not_found_path)?;
            target(res, None, tail)
        }
        [] => Err(ApiError::not_found_path()),
    }
}

fn write_options(req: &Request<'_>, sub: Option<String>) -> WriteOptions {
    let field_manager = match req.q("fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        // The real server names an unnamed manager after the client's user agent.
        _ => req
            .user_agent
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    WriteOptions {
        field_manager,
        dry_run: req.q("dryRun").is_some_and(|d| d == "All"),
        validation: match req.q("fieldValidation") {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
        subresource: sub,
        force: req.flag("force"),
    }
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn wants_metadata(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=PartialObjectMetadata"))
}

fn written(w: Written, code_if_created: u16) -> Response<ResponseBody> {
    let mut r = json_response(if w.created { code_if_created } else { 200 }, &w.object);
    for warning in w.warnings {
        let text = format!("299 - {}", Value::String(warning));
        if let Ok(v) = text.parse() {
            r.headers_mut().append(hyper::header::WARNING, v);
        }
    }
    r
}

fn patch_kind(content_type: &str) -> ApiResult<PatchKind> {
    Ok(
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/json-patch+json" => PatchKind::Json,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchKind::Apply,
            other => return Err(ApiError::unsupported_media_type(other)),
        },
    )
}

fn resource_request(
    shared: &Arc<Shared>,
    req: &Request<'_>,
    group: &str,
    version: &str,
    rest: &[&str],
) -> ApiResult<Response<ResponseBody>> {
    let t = resolve(shared, group, version, rest)?;
    let ns_key = if t.res.namespaced {
        t.namespace.clone()
    } else {
        None
    };
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(req.q("fieldSelector").unwrap_or_default())?;
    let include = IncludeObject::parse(req.q("includeObject"));
    if let (Some(sub), Some(name)) = (t.subresource.as_deref(), t.name.as_deref()) {
        let ns = ns_key.as_deref().unwrap_or_default();
        match sub {
            "log" if req.method == Method::GET => {
                let tail = req.q("tailLines").and_then(|t| t.parse().ok());
                return crate::subresources::log(
                    shared,
                    &t.res,
                    ns,
                    name,
                    req.q("container"),
                    tail,
                    req.flag("follow"),
                );
            }
            "scale" => {
                let opts = write_options(req, None);
                let change = match req.method {
                    Method::GET => None,
                    Method::PUT => Some((None, req.json_body()?)),
                    Method::PATCH => Some((Some(patch_kind(req.content_type)?), req.json_body()?)),
                    _ => return Err(ApiError::method_not_allowed()),
                };
                return crate::subresources::scale(shared, &t.res, ns, name, change, &opts);
            }
            "status" => {}
            _ => return Err(ApiError::method_not_allowed()),
        }
    }
    match (&req.method, &t.name) {
        (&Method::GET, None) if req.flag("watch") => {
            let rv = req.q("resourceVersion").unwrap_or_default();
            if !rv.is_empty() && rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version {rv:?}"
                )));
            }
            let timeout = req
                .q("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1800);
            let rx = watch::start(
                Arc::clone(shared),
                watch::WatchRequest {
                    res: Arc::clone(&t.res),
                    version: t.version.clone(),
                    namespace: ns_key,
                    labels,
                    fields,
                    resource_version: req.q("resourceVersion").unwrap_or_default().to_string(),
                    send_initial_events: req.flag("sendInitialEvents"),
                    bookmarks: req.flag("allowWatchBookmarks"),
                    timeout: Duration::from_secs(timeout.min(3600)),
                    form: if wants_table(req.accept) {
                        watch::WatchForm::Table(include)
                    } else if wants_metadata(req.accept) {
                        watch::WatchForm::Metadata
                    } else {
                        watch::WatchForm::Object
                    },
                },
            );
            Ok(stream_response(rx))
        }
        (&Method::GET, None) => {
            let store = shared.lock();
            let items = store.list(&t.res, &t.version, ns_key.as_deref(), &labels, &fields);
            let rv = store.current_rv().to_string();
            if wants_table(req.accept) {
                return Ok(json_response(
                    200,
                    &table::to_table(&t.res, &items, &rv, include, true),
                ));
            }
            if wants_metadata(req.accept) {
                let items: Vec<Value> = items.iter().map(table::partial_metadata).collect();
                return Ok(json_response(
                    200,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "items": items}),
                ));
            }
            Ok(json_response(
                200,
                &json!({
                    "kind": format!("{}List", t.res.kind),
                    "apiVersion": t.res.api_version(&t.version),
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }),
            ))
        }
        (&Method::GET, Some(name)) => {
            let store = shared.lock();
            let obj = store.get(
                &t.res,
                &t.version,
                ns_key.as_deref().unwrap_or_default(),
                name,
            )?;
            if wants_table(req.accept) {
                let rv = store.current_rv().to_string();
                return Ok(json_response(
                    200,
                    &table::to_table(&t.res, &[obj], &rv, include, true),
                ));
            }
            if wants_metadata(req.accept) {
                return Ok(json_response(200, &table::partial_metadata(&obj)));
            }
            Ok(json_response(200, &obj))
        }
        (&Method::POST, None) => {
            let body = req.create_body(&t.res)?;
            let opts = write_options(req, None);
            let w = shared
                .lock()
                .create_at(&t.res, &t.version, ns_key.as_deref(), body, &opts)?;
            Ok(written(w, 201))
        }
        (&Method::PUT, Some(name)) => {
            let body = req.json_body()?;
            let opts = write_options(req, t.subresource.clone());
            let w = shared.lock().update(
                &t.res,
                &t.version,
                ns_key.as_deref().unwrap_or_default(),
                name,
                body,
                &opts,
            )?;
            Ok(written(w, 201))
        }
        (&Method::PATCH, Some(name)) => {
            let kind = patch_kind(req.content_type)?;
            let body = req.json_body()?;
            let opts = write_options(req, t.subresource.clone());
            let w = shared.lock().patch(
                &t.res,
                &t.version,
                ns_key.as_deref(),
                name,
                kind,
                &body,
                &opts,
            )?;
            Ok(written(w, 201))
        }
        (&Method::DELETE, Some(name)) => {
            let mut options = req.json_body()?;
            if !options.is_object() {
                return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
            }
            if let Some(p) = req.q("propagationPolicy") {
                options["propagationPolicy"] = json!(p);
            }
            let dry_run = req.q("dryRun").is_some_and(|d| d == "All")
                || options
                    .get("dryRun")
                    .is_some_and(|d| d.to_string().contains("All"));
            let obj = shared.lock().delete(
                &t.res,
                &t.version,
                ns_key.as_deref().unwrap_or_default(),
                name,
                &options,
                dry_run,
            )?;
            Ok(json_response(200, &obj))
        }
        (&Method::DELETE, None) => {
            let options = req.json_body()?;
            let mut store = shared.lock();
            let items = store.list(&t.res, &t.version, ns_key.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for item in items {
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                deleted.push(store.delete(&t.res, &t.version, &ns, &name, &options, false)?);
            }
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(&t.version), "metadata": {}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
