//! What Kelvin's cluster metadata costs: memory per object kept, and how fast a query
//! resolves addresses to pods and services.
//!
//! Builds the state of a large cluster from synthetic objects shaped like real ones
//! (labels, owner, two containers, conditions, managed fields): `PODS` pods (default
//! 150,000) on `NODES` nodes (5,000), `SERVICES` services (20,000) selecting them. Then,
//! side by side:
//! - memory: bytes the state holds (a counting allocator), per pod, against the size of
//!   the pod objects as the API server sends them (JSON);
//! - resolution: `px.pod_id_to_service_name(px.ip_to_pod_id(addr))` through PxL's
//!   functions over one column of `ROWS` addresses (default 1,000,000), against a bare
//!   `HashMap<IpAddr, String>` lookup of the same addresses.
//!
//! Run: `cargo bench -p kelvin --bench metadata_cache`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark binary

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Service};
use kelvin::metadata::ClusterMetadata;

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pod_ip(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap();
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn pod_json(i: usize, nodes: usize, services: usize) -> serde_json::Value {
    let app = format!("app-{}", i % services);
    serde_json::json!({
        "metadata": {
            "name": format!("{app}-7d9f8c6b5-{i:05x}"),
            "namespace": format!("ns-{}", i % 200),
            "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5", "tier": "backend"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"), "uid": "rs", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}}],
        },
        "spec": {
            "nodeName": format!("node-{}", i % nodes),
            "containers": [
                {"name": "app", "image": "registry.example/app:1.2.3", "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                {"name": "sidecar", "image": "registry.example/proxy:1.0", "resources": {}},
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": pod_ip(i).to_string(),
            "startTime": "2026-12-01T10:00:00Z",
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [
                {"name": "app", "containerID": format!("containerd://{:064x}", i), "image": "registry.example/app:1.2.3", "imageID": "", "ready": true, "restartCount": 0},
                {"name": "sidecar", "containerID": format!("containerd://{:064x}", i + (1 << 40)), "image": "registry.example/proxy:1.0", "imageID": "", "ready": true, "restartCount": 0},
            ],
        },
    })
}

fn main() {
    let (pods, nodes, services, rows) = (
        env("PODS", 150_000),
        env("NODES", 5_000),
        env("SERVICES", 20_000),
        env("ROWS", 1_000_000),
    );
    let metadata = ClusterMetadata::default();
    let mut json_bytes = 0usize;
    let before = LIVE.load(Ordering::Relaxed);
    for s in 0..services {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("app-{s}"), "namespace": format!("ns-{}", s % 200), "uid": format!("svc-{s}")},
            "spec": {"selector": {"app": format!("app-{s}")}, "clusterIPs": [format!("10.96.{}.{}", s / 256, s % 256)]},
        }))
        .unwrap();
        metadata.update_cluster(|c| c.apply_service(&service));
    }
    let started = Instant::now();
    for i in 0..pods {
        let value = pod_json(i, nodes, services);
        json_bytes += value.to_string().len();
        let pod: Pod = serde_json::from_value(value).unwrap();
        metadata.update_cluster(|c| c.apply_pod(&pod));
    }
    let applied = started.elapsed();
    let held = usize::try_from(LIVE.load(Ordering::Relaxed) - before).unwrap_or(0);
    println!("objects: {pods} pods on {nodes} nodes, {services} services");
    println!(
        "memory held: {:.1} MiB, {} bytes per pod (services included); the pods as JSON: {:.1} MiB, {} bytes per pod; ratio held/JSON {:.3}",
        held as f64 / f64::from(1 << 20),
        held / pods.max(1),
        json_bytes as f64 / f64::from(1 << 20),
        json_bytes / pods.max(1),
        held as f64 / json_bytes as f64
    );
    println!(
        "applied {:.0} pods/s (decoding included)",
        pods as f64 / applied.as_secs_f64()
    );

    // Resolution: one column of addresses, most of them pods, some unknown.
    let addresses: Vec<String> = (0..rows)
        .map(|r| pod_ip((r * 7919) % (pods + pods / 10)).to_string())
        .collect();
    let column = datafusion::arrow::array::StringArray::from(addresses.clone());
    let lookup: Arc<dyn pxl::MetadataLookup> = Arc::new(metadata.clone());
    let started = Instant::now();
    let mut found = 0usize;
    for ip in column.iter().flatten() {
        let pod = lookup.pod_uid_by_ip(ip).unwrap_or_default();
        let services = lookup.pod(&pod).map(|p| p.service_uids).unwrap_or_default();
        if !services.is_empty() {
            found += 1;
        }
    }
    let ours = started.elapsed();
    let baseline: HashMap<IpAddr, String> = (0..pods)
        .map(|i| (pod_ip(i), format!("ns-{}/app-{}", i % 200, i % services)))
        .collect();
    let started = Instant::now();
    let mut found_baseline = 0usize;
    for ip in column.iter().flatten() {
        if ip
            .parse()
            .ok()
            .and_then(|ip: IpAddr| baseline.get(&ip))
            .is_some()
        {
            found_baseline += 1;
        }
    }
    let bare = started.elapsed();
    assert_eq!(found, found_baseline, "both resolve the same addresses");
    println!(
        "address -> pod -> services: {:.2} M/s; bare HashMap<IpAddr, String>: {:.2} M/s; ratio {:.2}x slower ({found} of {rows} resolved)",
        rows as f64 / ours.as_secs_f64() / 1e6,
        rows as f64 / bare.as_secs_f64() / 1e6,
        ours.as_secs_f64() / bare.as_secs_f64()
    );
}
