//! The HTTP server: a loopback listener, one task per connection, and the kubeconfig
//! that points kubectl and `kube` at it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::handlers::{self, Request};
use crate::http::{ResponseBody, error_response, parse_query};
use crate::status::ApiError;
use crate::store::Store;
use crate::subresources::LogKey;

/// Largest request body accepted; bigger ones get 413.
const MAX_BODY: usize = 16 << 20;

/// Settings of an emulator instance.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// How many change events are kept for watches to resume from; older
    /// resourceVersions get 410 Gone.
    pub watch_window: usize,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            watch_window: 10_000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// State shared by the connections, watches and controllers.
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) addr: SocketAddr,
    pub(crate) bookmark_interval: Duration,
    /// Bumped to end every open watch (stop, or a test forcing reconnects).
    pub(crate) watch_closer: watch::Sender<u64>,
    /// Container output files, registered by node agents for `kubectl logs`.
    logs: Mutex<HashMap<LogKey, PathBuf>>,
}

impl Shared {
    /// The store, even if a panicking thread poisoned the lock (the data stays usable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records where a container's output goes.
    pub(crate) fn set_log_path(&self, key: LogKey, path: PathBuf) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, path);
    }

    /// Where a container's output went, if it ever ran.
    pub(crate) fn log_path(&self, key: &LogKey) -> Option<PathBuf> {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

/// A running API-server emulator on 127.0.0.1.
pub struct Emulator {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Emulator {
    /// Binds an ephemeral loopback port and starts serving and the emulated controllers.
    pub async fn start(config: EmulatorConfig) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Bind { source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { source })?;
        let (watch_closer, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.watch_window)),
            addr,
            bookmark_interval: config.bookmark_interval,
            watch_closer,
            logs: Mutex::new(HashMap::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(listener, Arc::clone(&shared), stop_rx.clone()));
        tasks.spawn(crate::controllers::run(Arc::clone(&shared), stop_rx));
        Ok(Self {
            shared,
            stop,
            tasks,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// A kubeconfig (YAML) whose current context points at this emulator.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: px-e2e\n  cluster:\n    server: {}\ncontexts:\n- name: px-e2e\n  context:\n    cluster: px-e2e\n    user: px-e2e\n    namespace: default\ncurrent-context: px-e2e\nusers:\n- name: px-e2e\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Emulator::kubeconfig`] to `path` (atomically: written aside, then renamed).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        let tmp = path.with_extension("tmp-px-e2e");
        let err = |source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, self.kubeconfig()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::WriteFile {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Drops every kept watch event, as an etcd compaction does: watches that resume from
    /// an older resourceVersion then get 410 Gone.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Ends every open watch; clients reconnect from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.watch_closer.send_modify(|n| *n += 1);
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops serving, ends watches and waits for every task to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.close_watches();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.watch_closer.send_modify(|n| *n += 1);
        self.tasks.abort_all();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, std::convert::Infallible>(respond(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn respond(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
) -> hyper::Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error_response(&ApiError::bad_request(
                "request body too large or unreadable",
            ));
        }
    };
    let (accept, content_type, user_agent) = (
        header(hyper::header::ACCEPT),
        header(hyper::header::CONTENT_TYPE),
        header(hyper::header::USER_AGENT),
    );
    handlers::handle(
        &shared,
        Request {
            method: parts.method.clone(),
            path: parts.uri.path(),
            query: parse_query(parts.uri.query()),
            accept: &accept,
            content_type: &content_type,
            user_agent: &user_agent,
            body,
        },
    )
}
