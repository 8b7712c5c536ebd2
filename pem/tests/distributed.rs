//! A distributed query: two `vizier-pem` processes, each tracing only its own cgroup
//! (as two nodes would), and a Kelvin that answers one query over both through their
//! table services. What crosses the wire between Kelvin and each PEM is counted by a
//! proxy in between, to show that the projection and the filters were applied at the
//! PEM; a PEM that is down fails the query with an error that names it.
//!
//! Needs root (eBPF, cgroups); under `CI=true` it runs, never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kelvin::{Kelvin, RemotePem, RemotePems};
use px_api::vizierpb::{
    ExecuteScriptRequest, column::ColData, execute_script_response,
    vizier_service_client::VizierServiceClient,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/http_peer.py");
/// Requests each node's client makes.
const REQUESTS: usize = 40;
/// The response body the peer sends for `/tag/...`, recognisable on the wire.
const BODY_MARKER: &[u8] = b"TAGGED-RESPONSE-BODY";

mod common;

use common::Cgroup;

fn may_run() -> bool {
    common::privileged("distributed")
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One simulated node: its cgroup, an HTTP server in it, and its PEM.
struct Node {
    name: &'static str,
    pem_addr: std::net::SocketAddr,
    server_port: u16,
    pem: Process,
    _server: Process,
    cgroup: Cgroup,
}

impl Node {
    fn start(name: &'static str) -> Self {
        let cgroup = Cgroup::create(name);
        let mut server = cgroup.spawn("python3", &[PEER, "server"]);
        let mut port = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let server_port = port.trim().parse().unwrap();
        let pem_addr = free_addr();
        let pem = Command::new(env!("CARGO_BIN_EXE_vizier-pem"))
            .args(["--listen", &pem_addr.to_string(), "--memory-limit", "256Mi"])
            .arg("--disable-tls")
            .arg("--cgroup")
            .arg(&cgroup.0)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let node = Self {
            name,
            pem_addr,
            server_port,
            pem: Process(pem),
            _server: Process(server),
            cgroup,
        };
        node.wait_for_pem();
        node
    }

    /// The PEM listens once its probes are attached.
    fn wait_for_pem(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(self.pem_addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "PEM {} never listened",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Requests from a client in this node's cgroup to this node's server.
    fn make_requests(&self) {
        let port = self.server_port.to_string();
        let count = REQUESTS.to_string();
        let args = [
            PEER, "client", "tagged", "--port", &port, "--count", &count, "--tag", self.name,
        ];
        let output = self
            .cgroup
            .spawn("python3", &args)
            .wait_with_output()
            .unwrap();
        let line = String::from_utf8_lossy(&output.stdout);
        assert!(line.contains(&format!("\"ok\": {REQUESTS}")), "{line}");
    }
}

fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A TCP proxy that counts (and keeps, up to a bound) what the upstream sends back.
struct CountingProxy {
    addr: std::net::SocketAddr,
    received: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl CountingProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, keep) = (Arc::clone(&received), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    continue; // the upstream is down: the connection just closes
                };
                let (counter, keep) = (Arc::clone(&counter), Arc::clone(&keep));
                tokio::spawn(relay(downstream, up, counter, keep));
            }
        });
        Self {
            addr,
            received,
            seen,
        }
    }

    /// Bytes received from upstream so far, and forgets what it kept.
    fn take(&self) -> (u64, Vec<u8>) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (self.received.swap(0, Ordering::SeqCst), seen)
    }
}

async fn relay(
    down: tokio::net::TcpStream,
    up: tokio::net::TcpStream,
    counter: Arc<AtomicU64>,
    keep: Arc<Mutex<Vec<u8>>>,
) {
    let (mut down_read, mut down_write) = down.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
    });
    let mut buf = vec![0u8; 64 << 10];
    while let Ok(n) = up_read.read(&mut buf).await {
        if n == 0 || down_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
        let mut kept = keep.lock().unwrap();
        if kept.len() < (64 << 20) {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    requests.abort();
}

async fn serve_kelvin(kelvin: Kelvin) -> Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kelvin.into_server(kelvin::TokenCheck::new(None)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Output tables by name, each as rows of column name -> value as text; or the
/// status message of a failed query.
type Tables = BTreeMap<String, Vec<BTreeMap<String, String>>>;

async fn run(channel: &Channel, script: &str) -> Result<Tables, String> {
    let mut stream = VizierServiceClient::new(channel.clone())
        .execute_script(ExecuteScriptRequest {
            query_str: script.to_owned(),
            ..ExecuteScriptRequest::default()
        })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let (mut names, mut columns, mut tables) = (BTreeMap::new(), BTreeMap::new(), Tables::new());
    while let Some(response) = stream.message().await.map_err(|s| s.message().to_owned())? {
        if let Some(status) = response.status
            && status.code != 0
        {
            return Err(status.message);
        }
        match response.result {
            Some(execute_script_response::Result::MetaData(meta)) => {
                let cols: Vec<String> = meta
                    .relation
                    .unwrap()
                    .columns
                    .into_iter()
                    .map(|c| c.column_name)
                    .collect();
                tables.insert(meta.name.clone(), Vec::new());
                columns.insert(meta.id.clone(), cols);
                names.insert(meta.id, meta.name);
            }
            Some(execute_script_response::Result::Data(data)) => {
                let Some(batch) = data.batch else { continue };
                let rows = tables.get_mut(&names[&batch.table_id]).unwrap();
                let cols = &columns[&batch.table_id];
                for i in 0..usize::try_from(batch.num_rows).unwrap() {
                    let row = cols
                        .iter()
                        .zip(&batch.cols)
                        .map(|(name, col)| (name.clone(), cell(col.col_data.as_ref().unwrap(), i)))
                        .collect();
                    rows.push(row);
                }
            }
            None => {}
        }
    }
    Ok(tables)
}

fn cell(data: &ColData, i: usize) -> String {
    match data {
        ColData::BooleanData(c) => c.data[i].to_string(),
        ColData::Int64Data(c) => c.data[i].to_string(),
        ColData::Time64nsData(c) => c.data[i].to_string(),
        ColData::Float64Data(c) => c.data[i].to_string(),
        ColData::StringData(c) => String::from_utf8_lossy(&c.data[i]).into_owned(),
        ColData::Uint128Data(c) => format!("{:?}", c.data[i]),
    }
}

const PER_PATH: &str = "import px
df = px.DataFrame('http_events', start_time='-5m')
df = df[px.contains(df.req_path, '/tag/')]
px.display(df.groupby('req_path').agg(n=('latency', px.count)), 'per_path')
";

const NARROW: &str = "import px
df = px.DataFrame('http_events', start_time='-5m', select=['req_path', 'resp_status'])
df = df[df.req_path == '/tag/node-a/3']
px.display(df, 'narrow')
";

const LIST_ONLY: &str = "import px
px.display(px.GetTables(), 'tables')
";

const WIDE: &str = "import px
df = px.DataFrame('http_events', start_time='-5m')
px.display(df, 'wide')
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_spans_two_pems_and_only_what_it_needs_crosses_the_wire() {
    if !may_run() {
        return;
    }
    let nodes = tokio::task::spawn_blocking(|| [Node::start("node-a"), Node::start("node-b")])
        .await
        .unwrap();
    let mut proxies = Vec::new();
    let mut pems = Vec::new();
    for node in &nodes {
        let proxy = CountingProxy::start(node.pem_addr).await;
        pems.push(RemotePem::new(node.name, &format!("http://{}", proxy.addr), None).unwrap());
        proxies.push(proxy);
    }
    let kelvin = serve_kelvin(Kelvin::over_pems(RemotePems::new(pems))).await;
    let nodes = tokio::task::spawn_blocking(move || {
        for node in &nodes {
            node.make_requests();
        }
        nodes
    })
    .await
    .unwrap();

    // Each node's requests, client and server side, from that node's PEM only: a path
    // counted twice per request (two roles), never four times (two PEMs).
    let expected: BTreeMap<String, String> = ["node-a", "node-b"]
        .iter()
        .flat_map(|tag| {
            (0..5).map(move |i| (format!("/tag/{tag}/{i}"), (2 * REQUESTS / 5).to_string()))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let per_path = loop {
        let tables = run(&kelvin, PER_PATH).await.unwrap();
        let per_path: BTreeMap<String, String> = tables["per_path"]
            .iter()
            .map(|row| (row["req_path"].clone(), row["n"].clone()))
            .collect();
        if per_path == expected || Instant::now() > deadline {
            break per_path;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(per_path, expected);

    // Every query first lists each PEM's tables (their schemas): measured alone, it is
    // taken off what the scans moved.
    // HTTP/2 housekeeping frames (window updates, pings) ride along now and then: the
    // least of three listings is the listing itself.
    let mut listing = vec![u64::MAX; proxies.len()];
    for _ in 0..3 {
        proxies.iter().for_each(|p| drop(p.take()));
        run(&kelvin, LIST_ONLY).await.unwrap();
        for (least, p) in listing.iter_mut().zip(&proxies) {
            *least = (*least).min(p.take().0);
        }
    }
    // Everything, then only two columns of the rows of one path.

    let wide = run(&kelvin, WIDE).await.unwrap();
    assert_eq!(wide["wide"].len(), 4 * REQUESTS, "two roles, two nodes");
    let wide_wire: Vec<(u64, Vec<u8>)> = proxies.iter().map(CountingProxy::take).collect();
    let narrow = run(&kelvin, NARROW).await.unwrap();
    let narrow_wire: Vec<(u64, Vec<u8>)> = proxies.iter().map(CountingProxy::take).collect();

    let rows = &narrow["narrow"];
    assert_eq!(rows.len(), 2 * REQUESTS / 5, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["req_path"] == "/tag/node-a/3" && r["resp_status"] == "200")
    );
    assert_eq!(rows[0].len(), 2, "only the selected columns: {:?}", rows[0]);

    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    for (i, node) in nodes.iter().enumerate() {
        let (wide_bytes, wide_seen) = &wide_wire[i];
        let (narrow_bytes, narrow_seen) = &narrow_wire[i];
        let (wide_bytes, narrow_bytes) = (
            wide_bytes.saturating_sub(listing[i]),
            narrow_bytes.saturating_sub(listing[i]),
        );
        eprintln!(
            "{}: listing {} B; scans: wide query {wide_bytes} B, narrow query {narrow_bytes} B",
            node.name, listing[i]
        );
        assert!(
            contains(wide_seen, BODY_MARKER),
            "the wide query reads resp_body"
        );
        assert!(
            !contains(narrow_seen, BODY_MARKER),
            "resp_body was not selected, so it must not travel"
        );
        assert!(
            narrow_bytes * 10 < wide_bytes,
            "{}: the narrow query moved {narrow_bytes} B, the wide one {wide_bytes} B",
            node.name
        );
    }
    let needle = b"/tag/node-b/";
    assert!(
        !contains(&narrow_wire[1].1, needle),
        "node-b's rows fail the filter, so none of them may travel"
    );

    // A node whose PEM is down: the query fails and says which one.
    let [node_a, mut node_b] = nodes;
    let _ = node_b.pem.0.kill();
    let _ = node_b.pem.0.wait();
    let error = run(&kelvin, PER_PATH).await.unwrap_err();
    assert!(
        error.contains("PEM node-b") && error.contains("unavailable"),
        "{error}"
    );
    drop((node_a, node_b));
}

#[test]
fn a_cgroup_that_is_not_one_is_refused_by_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_vizier-pem"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--disable-tls",
            "--cgroup",
            "/tmp",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cgroup /tmp") && stderr.contains("cgroup v2"),
        "{stderr}"
    );
}

#[test]
fn beyond_loopback_it_refuses_to_serve_without_a_token_unless_told() {
    let output = Command::new(env!("CARGO_BIN_EXE_vizier-pem"))
        .args(["--listen", "0.0.0.0:0", "--disable-tls"])
        .env_remove("PX_PEM_SERVICE_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no service token")
            && stderr.contains("PX_PEM_SERVICE_TOKEN")
            && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
    // A token on the command line is not taken: every user reads /proc/PID/cmdline.
    let output = Command::new(env!("CARGO_BIN_EXE_vizier-pem"))
        .args(["--listen", "127.0.0.1:0", "--service-token", "t"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unexpected argument '--service-token'")
    );
}

/// Certificates from `scripts/test-certs.sh` in a fresh directory.
fn certificates() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("distributed-tls");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-certs.sh");
    let status = Command::new(script).arg(&dir).status().unwrap();
    assert!(
        status.success(),
        "scripts/test-certs.sh failed (is openssl installed?)"
    );
    dir
}

/// A `vizier-pem` on a free loopback port with the flags `configure` adds, once it
/// listens.
fn listening_pem(
    configure: impl FnOnce(&mut Command) -> &mut Command,
) -> (Process, std::net::SocketAddr) {
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_vizier-pem"));
    command
        .args(["--listen", &addr.to_string(), "--memory-limit", "256Mi"])
        .env("RUST_LOG", "warn");
    let pem = Process(configure(&mut command).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the PEM never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    (pem, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kelvin_and_a_pem_authenticate_each_other_with_mutual_tls() {
    if !may_run() {
        return;
    }
    let certs = certificates();
    let path = |name: &str| certs.join(name).to_str().unwrap().to_owned();
    let (pem, addr) = listening_pem(|c| {
        c.args([
            "--tls-cert",
            &path("server.pem"),
            "--tls-key",
            &path("server.key"),
        ])
        .args(["--tls-client-ca", &path("ca.pem")])
    });
    let url = format!("https://{addr}");
    let client_tls = |identity: bool| {
        px_api::tls::ClientTls {
            ca: Some(certs.join("ca.pem")),
            identity: identity.then(|| (certs.join("client.pem"), certs.join("client.key"))),
            server_name: None,
        }
        .config()
        .unwrap()
    };
    let script = "import px\npx.display(px.GetTables(), 'tables')\n";

    // With Kelvin's certificate: the PEM's tables.
    let trusted = RemotePem::new("node-a", &url, Some(client_tls(true))).unwrap();
    let kelvin = serve_kelvin(Kelvin::over_pems(RemotePems::new(vec![trusted]))).await;
    let tables = run(&kelvin, script).await.unwrap();
    assert!(
        tables["tables"]
            .iter()
            .any(|r| r["table_name"] == "http_events"),
        "{tables:?}"
    );

    // Without one, or over plain HTTP: refused, and the error names the PEM.
    for (pem_url, tls) in [
        (url.clone(), Some(client_tls(false))),
        (format!("http://{addr}"), None),
    ] {
        let stranger = RemotePem::new("node-a", &pem_url, tls).unwrap();
        let kelvin = serve_kelvin(Kelvin::over_pems(RemotePems::new(vec![stranger]))).await;
        let error = run(&kelvin, script).await.unwrap_err();
        assert!(error.contains("PEM node-a"), "{error}");
    }
    drop(pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_with_a_service_token_answers_only_callers_that_present_it() {
    if !may_run() {
        return;
    }
    let (pem, addr) = listening_pem(|c| {
        c.arg("--disable-tls")
            .env("PX_PEM_SERVICE_TOKEN", "s3rvice-token")
    });
    let url = format!("http://{addr}");
    let script = "import px\npx.display(px.GetTables(), 'tables')\n";
    let kelvin_with = |token: Option<&str>| {
        let pem = RemotePem::new("node-a", &url, None)
            .unwrap()
            .with_token(token.map(|t| t.to_owned().into()).as_ref())
            .unwrap();
        Kelvin::over_pems(RemotePems::new(vec![pem]))
    };

    // Kelvin with the token gets the tables.
    let kelvin = serve_kelvin(kelvin_with(Some("s3rvice-token"))).await;
    let tables = run(&kelvin, script).await.unwrap();
    assert!(
        tables["tables"]
            .iter()
            .any(|r| r["table_name"] == "http_events")
    );

    // Without it, or with another: refused, naming the PEM.
    for token in [None, Some("guess")] {
        let kelvin = serve_kelvin(kelvin_with(token)).await;
        let error = run(&kelvin, script).await.unwrap_err();
        let refused = error.contains("not valid") || error.contains("needs a key");
        assert!(error.contains("PEM node-a") && refused, "{error}");
    }

    // The probe service too: nobody without the token loads a probe.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut probes = px_api::pem::probe_service_client::ProbeServiceClient::new(channel);
    let refused = probes
        .list_probes(px_api::pem::ListProbesRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    drop(pem);
}

/// A POST from curl on this host to a server on this host, carrying personal data in
/// its body and a header; every host-wide PEM traces both ends. The request's path holds
/// `tag`.
fn post_personal_data(tag: &str) -> Process {
    let mut server = Command::new("python3")
        .args([PEER, "server"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-H", "X-Contact: bob@example.org"])
        .args(["--data-binary", PERSONAL_BODY])
        .arg(format!("http://127.0.0.1:{}/echo?{tag}", port.trim()))
        .status()
        .unwrap();
    assert!(status.success());
    Process(server)
}

/// What `post_personal_data` sends.
const PERSONAL_BODY: &str = "contact alice@example.com from 10.1.2.3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_pems_keep_no_raw_sensitive_value_for_any_query_to_find() {
    if !may_run() {
        return;
    }
    let modes = ["Full", "Restricted", "PIIRestricted"];
    let pems: Vec<_> = modes
        .iter()
        .map(|mode| listening_pem(|c| c.args(["--disable-tls", "--data-access", mode])))
        .collect();
    let tag = format!("redaction-{}", std::process::id());
    let _server = post_personal_data(&tag);
    let select = |filter: &str| {
        format!(
            "import px\ndf = px.DataFrame(table='http_events', start_time='-5m')\n\
             df = df[px.contains(df.req_path, '{tag}')]\n{filter}\
             df = df[['req_body', 'req_headers', 'resp_body']]\npx.display(df, 'rows')\n"
        )
    };
    // Filters Kelvin pushes down to the PEM's table service.
    let on_raw = select(&format!("df = df[df.req_body == '{PERSONAL_BODY}']\n"));
    let on_redacted = select("df = df[df.req_body == 'REDACTED']\n");
    for (mode, (_pem, addr)) in modes.iter().zip(&pems) {
        let pem = RemotePem::new("node-a", &format!("http://{addr}"), None).unwrap();
        let kelvin = serve_kelvin(Kelvin::over_pems(RemotePems::new(vec![pem]))).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let rows = loop {
            let rows = run(&kelvin, &select("")).await.unwrap()["rows"].clone();
            // Both ends: curl's and the server's.
            if rows.len() >= 2 || Instant::now() > deadline {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(rows.len() >= 2, "{mode}: {rows:?}");
        let raw_matches = run(&kelvin, &on_raw).await.unwrap()["rows"].len();
        let redacted_matches = run(&kelvin, &on_redacted).await.unwrap()["rows"].len();
        for row in &rows {
            let (body, headers, resp) = (&row["req_body"], &row["req_headers"], &row["resp_body"]);
            match *mode {
                "Full" => {
                    assert_eq!(body, PERSONAL_BODY);
                    assert!(headers.contains("bob@example.org"), "{headers}");
                }
                "Restricted" => {
                    assert_eq!(
                        (body.as_str(), headers.as_str(), resp.as_str()),
                        ("REDACTED", "REDACTED", "REDACTED")
                    );
                }
                _ => {
                    assert_eq!(body, "contact <REDACTED_EMAIL> from <REDACTED_IPV4>");
                    assert!(
                        headers.contains("<REDACTED_EMAIL>") && !headers.contains("bob@"),
                        "{headers}"
                    );
                    assert!(
                        resp.contains("<REDACTED_EMAIL>") && !resp.contains("alice@"),
                        "{resp}"
                    );
                }
            }
        }
        let expected = match *mode {
            "Full" => (rows.len(), 0),
            "Restricted" => (0, rows.len()),
            _ => (0, 0),
        };
        assert_eq!(
            (raw_matches, redacted_matches),
            expected,
            "{mode}: a filter on the raw value"
        );
    }
}
