//! The `scale` subresource of Deployments (`kubectl scale`) and the `log` subresource of
//! pods run by simulated nodes (`kubectl logs`).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::http::{ChannelBody, ResponseBody, json_response};
use crate::patch;
use crate::resources::Resource;
use crate::server::Shared;
use crate::status::{ApiError, ApiResult};
use crate::store::{PatchKind, WriteOptions};

/// Whether `res` has the named subresource (besides `status`).
pub(crate) fn has(res: &Resource, sub: &str) -> bool {
    match sub {
        "scale" => res.group == "apps" && res.kind == "Deployment",
        "log" => res.group.is_empty() && res.kind == "Pod",
        _ => false,
    }
}

fn scale_of(obj: &Value) -> Value {
    let selector = crate::table::selector_text(obj.pointer("/spec/selector/matchLabels"));
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// GET, PUT or PATCH of `deployments/<name>/scale`.
pub(crate) fn scale(
    shared: &Arc<Shared>,
    res: &Arc<Resource>,
    ns: &str,
    name: &str,
    change: Option<(Option<PatchKind>, Value)>,
    opts: &WriteOptions,
) -> ApiResult<Response<ResponseBody>> {
    let mut store = shared.lock();
    let current = store.get(res, "v1", ns, name)?;
    let Some((kind, body)) = change else {
        return Ok(json_response(200, &scale_of(&current)));
    };
    let mut scale = scale_of(&current);
    match kind {
        None => scale = body,
        Some(PatchKind::Merge) | Some(PatchKind::Apply) => patch::merge_patch(&mut scale, &body),
        Some(PatchKind::Strategic) => patch::strategic_merge_patch(&mut scale, &body),
        Some(PatchKind::Json) => patch::json_patch(&mut scale, &body)?,
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request("spec.replicas must be a non-negative integer"))?;
    let mut updated = current;
    if !patch::set_field(&mut updated, &["spec", "replicas"], json!(replicas)) {
        return Err(ApiError::bad_request(
            "the deployment's spec is not an object",
        ));
    }
    let opts = WriteOptions {
        subresource: None,
        ..opts.clone()
    };
    let written = store.update(res, "v1", ns, name, updated, &opts)?;
    Ok(json_response(200, &scale_of(&written.object)))
}

/// Where node agents write each container's output: `(namespace, pod, container)`.
pub(crate) type LogKey = (String, String, String);

fn text(body: String) -> Response<ResponseBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// GET `pods/<name>/log`, with `container`, `tailLines` and `follow`.
pub(crate) fn log(
    shared: &Arc<Shared>,
    res: &Arc<Resource>,
    ns: &str,
    name: &str,
    container: Option<&str>,
    tail: Option<usize>,
    follow: bool,
) -> ApiResult<Response<ResponseBody>> {
    let pod = shared.lock().get(res, "v1", ns, name)?;
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let container = match (container, names.as_slice()) {
        (Some(c), _) => c.to_string(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let path: PathBuf = shared
        .log_path(&(ns.to_string(), name.to_string(), container.clone()))
        .ok_or_else(|| ApiError::bad_request(format!("container {container:?} in pod {name:?} is waiting to start: no process has run yet")))?;
    let content = std::fs::read_to_string(&path).unwrap_or_default();
    let shown = match tail {
        Some(n) => {
            let lines: Vec<&str> = content.lines().collect();
            let mut s = lines[lines.len().saturating_sub(n)..].join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            s
        }
        None => content.clone(),
    };
    if !follow {
        return Ok(text(shown));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut offset = content.len() as u64;
    let shared = Arc::clone(shared);
    let (ns, name) = (ns.to_string(), name.to_string());
    let res = Arc::clone(res);
    tokio::spawn(async move {
        if tx.send(Bytes::from(shown)).await.is_err() {
            return;
        }
        // Follows the file until the pod is gone or the client leaves.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.is_closed() || shared.lock().get(&res, "v1", &ns, &name).is_err() {
                return;
            }
            let mut chunk = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&path)
                && f.seek(SeekFrom::Start(offset)).is_ok()
            {
                let _ = f.take(1 << 20).read_to_end(&mut chunk);
            }
            if !chunk.is_empty() {
                offset += chunk.len() as u64;
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}
