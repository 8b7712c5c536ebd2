//! The standalone `kube-emulator` binary: kubeconfig when ready, clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use px_e2e::eventually;
use tokio::process::Command;

use super::fixtures::table;

#[tokio::test]
async fn serves_until_sigterm_then_removes_its_kubeconfig() {
    let dir = std::env::temp_dir().join(format!("px-e2e-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = eventually(Duration::from_secs(10), || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    assert!(ready.is_some(), "no kubeconfig written");

    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(["get", "namespaces"])
        .output()
        .await
        .unwrap();
    let rows = table(&String::from_utf8_lossy(&out.stdout));
    let names: Vec<&str> = rows.iter().skip(1).map(|r| r[0].as_str()).collect();
    assert_eq!(rows[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!kubeconfig.exists(), "kubeconfig left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn runs_pods_on_its_nodes_and_stops_them_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("px-e2e-bin-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node", "dev-1", "--image", "sleeper=/usr/bin/sleep"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ready = eventually(Duration::from_secs(10), || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    assert!(ready.is_some(), "no kubeconfig written");
    let kubectl = |args: &'static [&'static str], stdin: Option<&'static str>| {
        let (kubeconfig, cache) = (kubeconfig.clone(), dir.join("cache"));
        async move {
            let mut cmd = Command::new("kubectl");
            cmd.arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--cache-dir")
                .arg(&cache)
                .args(args);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut c = cmd.spawn().unwrap();
            if let Some(input) = stdin {
                use tokio::io::AsyncWriteExt;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .await
                    .unwrap();
            }
            c.stdin.take();
            String::from_utf8_lossy(&c.wait_with_output().await.unwrap().stdout).into_owned()
        }
    };
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: sleeper\n    args: [\"1000\"]\n";
    assert_eq!(
        kubectl(&["apply", "-f", "-"], Some(pod)).await,
        "pod/p created\n"
    );
    let pid = eventually(Duration::from_secs(10), || async {
        let id = kubectl(
            &[
                "get",
                "pod",
                "p",
                "-o",
                "jsonpath={.status.containerStatuses[0].containerID}",
            ],
            None,
        )
        .await;
        id.strip_prefix("px-e2e://")
            .and_then(|p| p.parse::<i32>().ok())
    })
    .await
    .expect("pod running");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!kubeconfig.exists(), "kubeconfig left behind");
    // The pod's process is gone (or a zombie until its parent, now gone, is reaped).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "pod process {pid} survived: {stat}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
