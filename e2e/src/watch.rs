//! Watch streams: backlog from the kept window (or the current state), then live events,
//! filtered by namespace and selectors, with bookmarks and 410 Gone for expired versions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::resources::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Shared;
use crate::status::ApiError;
use crate::store::WatchEvent;
use crate::table::{self, IncludeObject};

/// How watch events carry objects, from the request's Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchForm {
    /// The objects themselves.
    Object,
    /// One-row Tables (`kubectl get -w`).
    Table(IncludeObject),
    /// `PartialObjectMetadata` (metadata-only watches).
    Metadata,
}

/// What one watch request asked for.
pub(crate) struct WatchRequest {
    pub(crate) res: Arc<Resource>,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
    /// `resourceVersion`; empty or `0` means "current state, then changes".
    pub(crate) resource_version: String,
    pub(crate) send_initial_events: bool,
    pub(crate) bookmarks: bool,
    pub(crate) timeout: Duration,
    /// The form events carry their objects in.
    pub(crate) form: WatchForm,
}

struct Filter {
    res: Arc<Resource>,
    version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.namespace.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
        });
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event this watcher sees, if any: objects entering or leaving the selection
    /// turn into ADDED and DELETED, as the real watch cache does.
    fn translate(&self, e: &WatchEvent) -> Option<(&'static str, Value)> {
        let own = e.group == self.res.group && e.plural == self.res.plural;
        let twin = e.plural == self.res.plural
            && crate::events::twin(&self.res.group, &self.res.plural) == Some(e.group.as_str());
        if !own && !twin {
            return None;
        }
        let (object, old) = if twin {
            (
                crate::events::convert(&e.object, &self.res.group),
                e.old
                    .as_ref()
                    .map(|o| crate::events::convert(o, &self.res.group)),
            )
        } else {
            (e.object.clone(), e.old.clone())
        };
        let now = self.matches(&object);
        let before = old.as_ref().is_some_and(|o| self.matches(o));
        let type_ = match (e.type_, before, now) {
            ("MODIFIED", false, true) => "ADDED",
            ("MODIFIED", true, false) => "DELETED",
            ("DELETED", true, _) | ("DELETED", _, true) => "DELETED",
            ("DELETED", false, false) => return None,
            (t, _, true) => t,
            _ => return None,
        };
        let mut obj = object;
        obj["apiVersion"] = json!(self.res.api_version(&self.version));
        Some((type_, obj))
    }
}

fn line(type_: &str, object: Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn render(form: WatchForm, res: &Resource, obj: Value, rv: u64, first: &mut bool) -> Value {
    match form {
        WatchForm::Metadata => table::partial_metadata(&obj),
        WatchForm::Table(include) => {
            let t = table::to_table(
                res,
                std::slice::from_ref(&obj),
                &rv.to_string(),
                include,
                *first,
            );
            *first = false;
            t
        }
        WatchForm::Object => obj,
    }
}

/// Starts a watch; returns the receiving end of its body.
pub(crate) fn start(shared: Arc<Shared>, req: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let filter = Filter {
        res: Arc::clone(&req.res),
        version: req.version.clone(),
        namespace: req.namespace.clone(),
        labels: req.labels.clone(),
        fields: req.fields.clone(),
    };
    let mut initial: Vec<Bytes> = Vec::new();
    let mut first = true;
    let start_rv;
    let receiver: Result<broadcast::Receiver<Arc<WatchEvent>>, ApiError>;
    {
        let store = shared.lock();
        let from_now = req.resource_version.is_empty()
            || req.resource_version == "0"
            || req.send_initial_events;
        if from_now {
            start_rv = store.current_rv();
            let objects = store.list(
                &req.res,
                &req.version,
                req.namespace.as_deref(),
                &req.labels,
                &req.fields,
            );
            for obj in objects {
                initial.push(line(
                    "ADDED",
                    render(req.form, &req.res, obj, start_rv, &mut first),
                ));
            }
            if req.send_initial_events && req.bookmarks {
                initial.push(line(
                    "BOOKMARK",
                    bookmark(&req.res, &req.version, start_rv, true),
                ));
            }
            receiver = Ok(store.subscribe());
        } else {
            let rv = req.resource_version.parse::<u64>().unwrap_or(0);
            // Everything up to the current version is in the backlog or before `rv`.
            start_rv = store.current_rv();
            receiver = store.watch_from(rv).map(|(backlog, rx)| {
                for e in backlog {
                    if let Some((t, obj)) = filter.translate(&e) {
                        initial.push(line(t, render(req.form, &req.res, obj, e.rv, &mut first)));
                    }
                }
                rx
            });
        }
    }
    let mut events = match receiver {
        Ok(rx) => rx,
        Err(e) => {
            // The real server answers 200 and sends the 410 as an ERROR event.
            let _ = tx.try_send(line("ERROR", e.to_status()));
            return rx;
        }
    };
    let mut closed = shared.watch_closer.subscribe();
    let bookmark_every = shared.bookmark_interval;
    tokio::spawn(async move {
        for chunk in initial {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = closed.changed() => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if req.bookmarks => {
                    if tx.send(line("BOOKMARK", bookmark(&req.res, &req.version, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                event = events.recv() => {
                    let Ok(e) = event else {
                        // Lagged or closed: end the stream; the client re-watches.
                        return;
                    };
                    if e.rv <= start_rv {
                        continue;
                    }
                    last_rv = last_rv.max(e.rv);
                    if let Some((t, obj)) = filter.translate(&e) {
                        let rendered = render(req.form, &req.res, obj, e.rv, &mut first);
                        if tx.send(line(t, rendered)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    rx
}

fn bookmark(res: &Resource, version: &str, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(version), "metadata": meta})
}
