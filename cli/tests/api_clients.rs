//! Clients of `px local`'s API over real captured traffic: `px run` with a bundled
//! script and its arguments, and Pixie's own Python client (`pxapi` 0.9.0 from PyPI),
//! with and without TLS: every column type decodes, and a script error arrives as the
//! client's own exception type with the line it points at.
//!
//! Needs root (the PEM) and PyPI (pxapi); under `CI=true` it fails rather than skips.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PX: &str = env!("CARGO_BIN_EXE_px");

struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The python of a virtualenv with pxapi, or None (after saying why) outside CI.
fn pxapi_python() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pxapi");
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(repo().join("scripts/pxapi-venv.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    if output.status.success() {
        return Some(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ));
    }
    let why = String::from_utf8_lossy(&output.stderr);
    assert!(!ci(), "CI=true: cannot install pxapi 0.9.0: {why}");
    eprintln!("skipping: cannot install pxapi 0.9.0: {why}");
    None
}

/// pxapi's python when this test can run (as root); None, after saying why, outside CI.
fn root_and_pxapi() -> Option<PathBuf> {
    if !is_root() {
        return None;
    }
    pxapi_python()
}

/// Whether the test runs as root (the PEM needs it); outside CI it may skip, saying so.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(!ci(), "CI=true: this test must run as root");
        eprintln!("skipping: needs root");
    }
    root
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the `px local` serving `addr` writes its API key: one file per instance, so the
/// tests' instances (and a `px local` of the machine's user) do not share one.
fn key_file(addr: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("api-key-{}", addr.replace(':', "-")))
}

/// The key of the `px local` serving `addr`.
fn key(addr: &str) -> String {
    std::fs::read_to_string(key_file(addr))
        .unwrap()
        .trim()
        .to_owned()
}

fn start_px(addr: &str, extra: &[&str]) -> Guarded {
    let mut child = Command::new(PX)
        .args([
            "local",
            "--quiet",
            "--memory-limit",
            "256Mi",
            "--addr",
            addr,
        ])
        .arg("--api-key-file")
        .arg(key_file(addr))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("Query API") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Guarded(child)
}

/// `px local` on a free port with its address, when this test may run (as root).
fn px_local() -> Option<(Guarded, String)> {
    if !is_root() {
        return None;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    Some((start_px(&addr, &[]), addr))
}

/// The test HTTP server, and the port it listens on.
fn peer_server() -> (Guarded, String) {
    let mut server = Command::new("python3")
        .arg(repo().join("pem/tests/peer/http_peer.py"))
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    (Guarded(server), port.trim().to_owned())
}

fn traffic() -> (Guarded, u32) {
    let (server, port) = peer_server();
    let client = Command::new("python3")
        .arg(repo().join("pem/tests/peer/http_peer.py"))
        .args(["client", "basic", "--port", &port])
        .output()
        .unwrap();
    assert!(client.status.success());
    let pid = server.0.id();
    (server, pid)
}

fn run_pxapi(python: &Path, addr: &str, script: &str, table: &str) -> Vec<serde_json::Value> {
    run_pxapi_with(python, addr, script, table, None)
}

/// Runs a script with pxapi; over TLS trusting `ca` when given.
fn run_pxapi_with(
    python: &Path,
    addr: &str,
    script: &str,
    table: &str,
    ca: Option<&Path>,
) -> Vec<serde_json::Value> {
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pxapi-{table}.pxl"));
    std::fs::write(&file, script).unwrap();
    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pxapi/run_script.py"))
        .args([addr, file.to_str().unwrap(), table])
        .args(ca)
        // Pixie's client takes px local's key as its token.
        .env("PX_API_KEY", key(addr))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pixies_python_client_reads_every_column_type_and_compiler_errors() {
    let Some(python) = root_and_pxapi() else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let _px = start_px(&addr, &[]);
    let (_server, server_pid) = traffic();

    let script = "import px
df = px.DataFrame(table='http_events', start_time='-5m')
df = df[df.trace_role == 2]
df.latency_ms = df.latency / 1000.0
df.failed = df.resp_status >= 400
df = df[['time_', 'upid', 'req_path', 'resp_status', 'latency_ms', 'failed']]
px.display(df, 'requests')
";
    let deadline = Instant::now() + Duration::from_secs(20);
    // The rows appear within a flush interval; poll briefly.
    let rows = loop {
        let rows = run_pxapi(&python, &addr, script, "requests");
        if rows.len() >= 5 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(rows.len() >= 5, "{rows:#?}");
    // The UPID's middle holds the PID, as Pixie prints it: 00000000-PPPP-PPPP-....
    // (Other tests' servers may answer /hello at the same time: find this one's rows.)
    let pid_of = |upid: &serde_json::Value| {
        let hex = upid.as_str().unwrap().replace('-', "");
        u32::from_str_radix(&hex[8..16], 16).unwrap()
    };
    let row = &rows
        .iter()
        .find(|r| {
            r["row"]["req_path"][1] == "b'/hello'" && pid_of(&r["row"]["upid"][1]) == server_pid
        })
        .unwrap_or_else(|| panic!("no /hello row with pid {server_pid} in the UPID: {rows:#?}"))["row"];
    // The Python types pxapi gives each Pixie type.
    assert_eq!(row["time_"][0], "int", "TIME64NS");
    assert_eq!(row["upid"][0], "UUID", "UINT128");
    assert_eq!(row["req_path"][0], "bytes", "STRING");
    assert_eq!(row["resp_status"][0], "int", "INT64");
    assert_eq!(row["latency_ms"][0], "float", "FLOAT64");
    assert_eq!(row["failed"][0], "bool", "BOOLEAN");
    assert_eq!(row["resp_status"][1], "200");
    assert_eq!(row["failed"][1], "False");
    let time: i64 = row["time_"][1].as_str().unwrap().parse().unwrap();
    assert!(time > 1_600_000_000_000_000_000);

    let bad =
        "import px\ndf = px.DataFrame(table='http_events')\ndf = df[df.nope > 1]\npx.display(df)\n";
    let out = run_pxapi(&python, &addr, bad, "output");
    assert_eq!(out[0]["error"], "PxLError", "{out:?}");
    let message = out[0]["message"].as_str().unwrap();
    assert!(message.contains("PxL, line 3"), "{message}");
    assert!(message.contains("column 'nope' not found"), "{message}");
}

/// A CA and a certificate it signed for 127.0.0.1 (`scripts/test-certs.sh`):
/// (ca.pem, server.pem, server.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let status = Command::new(repo().join("scripts/test-certs.sh"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/test-certs.sh failed (is openssl installed?)"
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
fn with_a_certificate_the_api_speaks_only_tls() {
    let Some(python) = root_and_pxapi() else {
        return;
    };
    let (ca, cert, key) = certificates(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls"));
    let addr = format!("127.0.0.1:{}", free_port());
    let _px = start_px(
        &addr,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let script = "import px\npx.display(px.GetTables(), 'tables')\n";

    // Pixie's client, over TLS, trusting the CA.
    let rows = run_pxapi_with(&python, &addr, script, "tables", Some(&ca));
    assert!(
        rows.iter()
            .any(|r| r["row"]["table_name"][1] == "b'http_events'"),
        "{rows:?}"
    );

    // `px run`, over TLS with --tls-ca; and without TLS, refused.
    let px_run = |extra: &[&str]| {
        Command::new(PX)
            .args(["run", "px/schemas", "-o", "json", "--addr", &addr])
            .env("PX_API_KEY_FILE", key_file(&addr))
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = px_run(&["--tls-ca", ca.to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("http_events"));
    let plain = px_run(&[]);
    assert!(
        !plain.status.success(),
        "a plaintext client must not get an answer"
    );
}

#[test]
fn px_run_prints_the_requests_px_local_captured() {
    let Some((_px, addr)) = px_local() else {
        return;
    };
    let (_server, server_pid) = traffic();
    let px_run = |script_args: &[&str]| {
        let mut args = vec!["run", "px/http_data", "-o", "json", "--addr", &addr, "--"];
        args.extend_from_slice(script_args);
        json_rows(&px(&args))
    };
    // GET and HEAD /hello reach this test's server (other tests' servers may be traced
    // too: this one's rows carry its pid).
    let served_methods = |rows: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        rows.iter()
            .filter(|r| r["pid"] == u64::from(server_pid))
            .map(|r| r["req_method"].as_str().unwrap().to_owned())
            .collect()
    };
    let want: std::collections::BTreeSet<String> = ["GET".to_owned(), "HEAD".to_owned()].into();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = px_run(&["--path_contains=/hello", "--start_time", "-1m"]);
        if served_methods(&rows) == want || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(served_methods(&rows), want, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r["_table"] == "http_data"
            && r["req_path"] == "/hello"
            && r["resp_status"] == 200),
        "{rows:#?}"
    );

    // The script's argument limits the rows.
    let one = px_run(&["--max_rows=1"]);
    assert_eq!(one.len(), 1, "{one:#?}");

    // SQL over the same table.
    let sql = "SELECT req_method, count(*) AS n FROM http_events WHERE req_path = '/hello' GROUP BY req_method ORDER BY req_method";
    let counts = json_rows(&px(&["run", "--sql", sql, "-o", "json", "--addr", &addr]));
    let methods: Vec<&str> = counts
        .iter()
        .map(|r| r["req_method"].as_str().unwrap())
        .collect();
    assert!(
        methods.contains(&"GET") && methods.contains(&"HEAD"),
        "{counts:#?}"
    );
    assert!(
        counts
            .iter()
            .all(|r| r["_table"] == "output" && r["n"].as_i64().unwrap() >= 2)
    );
}

/// Runs `px` with `args` (which name the `px local` with `--addr`), with that instance's
/// key file; its stdout, or a failure with its stderr.
fn px(args: &[&str]) -> String {
    let addr = args
        .iter()
        .position(|a| *a == "--addr")
        .map(|i| args[i + 1])
        .expect("px() needs --addr");
    let output = Command::new(PX)
        .args(args)
        .env("PX_API_KEY_FILE", key_file(addr))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "px {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_rows(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn px_trace_loads_the_clusters_tracepoint_yaml_and_removes_it_with_its_table() {
    let Some((_px, addr)) = px_local() else {
        return;
    };
    let manifest = repo().join("crds/examples/tracepoint-openat.yaml");
    let apply = || {
        px(&[
            "trace",
            "apply",
            "-f",
            manifest.to_str().unwrap(),
            "--addr",
            &addr,
        ])
    };
    let applied = apply();
    assert!(
        applied.contains("tracepoint/opens: Running (table file_opens)"),
        "{applied}"
    );
    // The same file again changes nothing.
    let again = apply();
    assert!(again.contains("Running"), "{again}");

    let marker = format!("/tmp/px-trace-cli-{}", std::process::id());
    let sql = format!("SELECT filename, comm FROM file_opens WHERE filename = '{marker}'");
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let _ = Command::new("cat")
            .arg(&marker)
            .stderr(Stdio::null())
            .status();
        let rows = json_rows(&px(&["run", "--sql", &sql, "-o", "json", "--addr", &addr]));
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!rows.is_empty(), "the opens of {marker} were not recorded");
    assert!(rows.iter().all(|r| r["comm"] == "cat"), "{rows:#?}");

    let status_script =
        std::env::temp_dir().join(format!("px-trace-status-{}.pxl", std::process::id()));
    std::fs::write(
        &status_script,
        "import px\npx.display(px.GetTracepointStatus(), 'status')\npx.display(px.GetTables(), 'tables')\n",
    )
    .unwrap();
    let script = status_script.to_str().unwrap();
    let status = json_rows(&px(&["run", "-f", script, "-o", "json", "--addr", &addr]));
    let tracepoint = status
        .iter()
        .find(|r| r["_table"] == "status")
        .expect("a status row");
    assert_eq!(tracepoint["name"], "pl/opens");
    assert_eq!(tracepoint["state"], "RUNNING_STATE");
    assert_eq!(tracepoint["output_tables"], "[\"file_opens\"]");
    assert!(
        status
            .iter()
            .any(|r| r["_table"] == "tables" && r["table_name"] == "file_opens")
    );
    let listed = px(&["trace", "list", "--addr", &addr]);
    assert!(
        listed.contains("opens") && listed.contains("file_opens") && listed.contains("Running"),
        "{listed}"
    );

    let deleted = px(&["trace", "delete", "opens", "--addr", &addr]);
    assert!(deleted.contains("Terminated"), "{deleted}");
    let after = json_rows(&px(&["run", "-f", script, "-o", "json", "--addr", &addr]));
    assert!(
        !after
            .iter()
            .any(|r| r["_table"] == "tables" && r["table_name"] == "file_opens"),
        "the table is dropped: {after:#?}"
    );
    let _ = std::fs::remove_file(&status_script);
}

/// Runs `px` as `nobody` with no capabilities (another user of this machine), with
/// `key` in PX_API_KEY when given.
fn px_as_nobody(args: &[&str], key: Option<&str>) -> std::process::Output {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(PX)
        .args(args)
        .env_remove("PX_API_KEY")
        .env_remove("PX_API_KEY_FILE");
    if let Some(key) = key {
        command.env("PX_API_KEY", key);
    }
    command.output().unwrap()
}

#[test]
fn another_user_of_the_machine_can_neither_query_nor_load_probes_without_the_key() {
    let Some((_px, addr)) = px_local() else {
        return;
    };
    let file = key_file(&addr);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the key file is for its owner only");

    // Without the key: refused, and told where the key is.
    let query = ["run", "px/schemas", "-o", "json", "--addr", &addr];
    let refused = px_as_nobody(&query, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("Unauthenticated") && stderr.contains(&file.display().to_string()),
        "says where the key is: {stderr}"
    );
    // The key file itself cannot be read by that user.
    let named = px_as_nobody(
        &[
            "run",
            "px/schemas",
            "--addr",
            &addr,
            "--api-key-file",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&named.stderr).contains("cannot read the key file"),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    // A wrong key is refused too, without echoing it.
    let wrong = px_as_nobody(&query, Some("guessed-key"));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("not valid") && !stderr.contains("guessed-key"),
        "{stderr}"
    );

    // No probe loads without the key: a kernel tracepoint would show this user every
    // file any process opens.
    // A copy that user can read (the checkout may be private to root).
    let manifest =
        std::env::temp_dir().join(format!("px-nobody-tracepoint-{}.yaml", std::process::id()));
    std::fs::copy(
        repo().join("crds/examples/tracepoint-openat.yaml"),
        &manifest,
    )
    .unwrap();
    std::fs::set_permissions(
        &manifest,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let apply = [
        "trace",
        "apply",
        "-f",
        manifest.to_str().unwrap(),
        "--addr",
        &addr,
    ];
    let load = px_as_nobody(&apply, None);
    let _ = std::fs::remove_file(&manifest);
    let stderr = String::from_utf8_lossy(&load.stderr);
    assert!(!load.status.success());
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let listed = px(&["trace", "list", "--addr", &addr]);
    assert!(
        !listed.contains("opens"),
        "a probe loaded without the key: {listed}"
    );

    // With the key, the same user queries.
    let key = key(&addr);
    let allowed = px_as_nobody(&query, Some(&key));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("http_events"));
}

#[test]
fn px_local_takes_the_data_access_mode_of_a_vizier() {
    if !is_root() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let _px = start_px(&addr, &["--data-access", "PIIRestricted"]);
    let (_server, port) = peer_server();
    let tag = format!("pii-{}", std::process::id());
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--data-binary",
            "card 4111 1111 1111 1111 of carol@example.net",
        ])
        .arg(format!("http://127.0.0.1:{port}/echo?{tag}"))
        .status()
        .unwrap();
    assert!(status.success());
    let sql = format!("SELECT req_body FROM http_events WHERE req_path LIKE '%{tag}'");
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = json_rows(&px(&["run", "--sql", &sql, "-o", "json", "--addr", &addr]));
        if rows.len() >= 2 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(rows.len() >= 2, "{rows:?}");
    for row in &rows {
        assert_eq!(
            row["req_body"], "card <REDACTED_CC_NUMBER> of <REDACTED_EMAIL>",
            "{row}"
        );
    }
}

#[test]
fn px_local_logs_no_key_even_at_debug_level() {
    if !is_root() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("px-local-debug-{}.log", std::process::id()));
    let child = Command::new(PX)
        .args([
            "local",
            "--quiet",
            "--memory-limit",
            "256Mi",
            "--addr",
            &addr,
        ])
        .arg("--api-key-file")
        .arg(key_file(&addr))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap().contains("Query API") {
        assert!(Instant::now() < deadline, "px local never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut px_local = Guarded(child);
    let key = key(&addr);
    // Requests that carry the key: a query, a probe loaded and removed, and one refused.
    let manifest = repo().join("crds/examples/tracepoint-openat.yaml");
    px(&["run", "px/schemas", "--addr", &addr]);
    px(&[
        "trace",
        "apply",
        "-f",
        manifest.to_str().unwrap(),
        "--addr",
        &addr,
    ]);
    px(&["trace", "delete", "opens", "--addr", &addr]);
    let _ = px_as_nobody(
        &["run", "px/schemas", "--addr", &addr],
        Some("wrong-key-0123456789"),
    );
    // A clean stop (SIGINT), so everything it logs is written.
    // SAFETY: kill with a valid pid and signal has no memory effects.
    unsafe { libc::kill(i32::try_from(px_local.0.id()).unwrap(), libc::SIGINT) };
    let _ = px_local.0.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG"),
        "RUST_LOG=debug logged nothing: {text}"
    );
    assert!(!text.contains(&key), "the API key is in px local's log");
    assert!(
        !text.contains("wrong-key-0123456789"),
        "a presented key is in the log"
    );
}

/// A query that keeps `px local`'s async workers busy for seconds (a self-join of the
/// whole table) does not hold up the capture: the socket tracer runs on its own thread,
/// so requests sent while the query runs all become rows, from both ends, and the
/// kernel drops nothing even with a small ring buffer.
#[test]
fn a_slow_query_does_not_hold_up_the_capture() {
    if !is_root() {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let stats = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("px-local-slow-query-{}.json", std::process::id()));
    let mut local = start_px(
        &addr,
        &[
            "--ring-buffer",
            "512Ki",
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    let (_server, port) = peer_server();
    let client = |args: &[&str]| {
        Command::new("python3")
            .arg(repo().join("pem/tests/peer/http_peer.py"))
            .args(["client"])
            .args(args)
            .args(["--port", &port])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Rows for the query to chew on (6,000: the self-join compares 36 million pairs), then
    // small requests for as long as it runs. Both are paced at rates the debug PEM keeps
    // up with while the other tests share the cores (at full speed, with large headers,
    // it sometimes did not, query or no query): during the query at most about 1,000
    // requests, some 600 KB of events, a second, so the 512 KiB ring buffer fills within
    // a second if nothing drains it while the query runs.
    assert!(
        client(&[
            "tagged",
            "--tag",
            "warmup",
            "--count",
            "3000",
            "--pause-ms",
            "0.2"
        ])
        .wait()
        .unwrap()
        .success()
    );
    let traffic = Guarded(client(&[
        "tagged",
        "--tag",
        "slow",
        "--count",
        "100000000",
        "--pause-ms",
        "1",
    ]));
    std::thread::sleep(Duration::from_millis(500));

    let epoch_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let slow = "SELECT count(*) AS n FROM http_events a CROSS JOIN http_events b \
                WHERE a.latency > b.latency";
    let (from, started) = (epoch_ns(), Instant::now());
    px(&["run", "--sql", slow, "-o", "json", "--addr", &addr]);
    let (took, to) = (started.elapsed(), epoch_ns());
    drop(traffic);
    assert!(
        took > Duration::from_secs(1),
        "the query was meant to keep the workers busy for a while; it took {took:?}"
    );

    // Requests answered while the query ran, as each end recorded them.
    std::thread::sleep(Duration::from_millis(500));
    let during = format!(
        "SELECT trace_role, count(*) AS n FROM http_events \
         WHERE (local_port = {port} OR remote_port = {port}) \
         AND time_ >= to_timestamp_nanos({from}) AND time_ <= to_timestamp_nanos({to}) \
         GROUP BY trace_role ORDER BY trace_role"
    );
    let counts = json_rows(&px(&[
        "run", "--sql", &during, "-o", "json", "--addr", &addr,
    ]));
    let count = |role: i64| {
        counts
            .iter()
            .find(|r| r["trace_role"] == role)
            .map_or(0, |r| r["n"].as_i64().unwrap())
    };
    let (client, server) = (count(1), count(2));
    assert!(
        client > 100 && server > 100,
        "too few requests were recorded while the {took:?} query ran: {counts:?}"
    );
    // Each request is one row per end; only those in flight at the window's edges differ.
    assert!(
        client.abs_diff(server) <= 4,
        "the two ends disagree, so rows were lost: {counts:?}"
    );

    // SAFETY: signalling our own child process.
    unsafe { libc::kill(local.0.id().cast_signed(), libc::SIGINT) };
    assert!(local.0.wait().unwrap().success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let _ = std::fs::remove_file(&stats);
    assert_eq!(
        json["kernel_drops"], 0,
        "the kernel dropped events while the query ran: {json}"
    );
}
