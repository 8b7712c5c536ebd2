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
