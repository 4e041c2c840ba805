//! Against the lab's real Docker daemons (`make lab-up`): stream directories from a container on
//! provider-a into containers on provider-b through the archive endpoints, verify what arrived,
//! and measure the throughput of a 64 MiB copy.
//! Run with `cargo test -p vimigrate-core --features lab-tests --test lab_archive -- --nocapture`.
#![cfg(feature = "lab-tests")]

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions};
use bollard::Docker;
use common::lab;
use vimigrate_core::{
    copy_archive, read_manifest, verify_copy, Entry, Error, ErrorKind, IntegrityError, Provider, ProviderConfig,
    TarManifest, MANAGED_LABEL,
};

const MIB: u64 = 1 << 20;

/// A provider for the engine, and a raw Docker client for the test's own setup and cleanup.
async fn connect(lab: &serde_json::Value, name: &str) -> (Provider, Docker) {
    let p = &lab["providers"][name];
    let config: ProviderConfig = serde_json::from_value(serde_json::json!({
        "name": name, "docker_host": p["docker_host"], "timeout_secs": 60,
    }))
    .unwrap();
    let provider = Provider::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{name} is not reachable, is the lab up (`make lab-up`)? {}", e.report()));
    let socket = p["docker_host"].as_str().unwrap().trim_start_matches("unix://").to_string();
    let docker = Docker::connect_with_unix(&socket, 60, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("{name} at {socket}: {e}"));
    (provider, docker)
}

async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    let _ = docker.remove_container(name, Some(options)).await;
}

/// Creates (and, with `start`, starts) a managed container running `script` in busybox's `sh`.
async fn container(docker: &Docker, image: &str, name: &str, script: &str, binds: Vec<String>, start: bool) {
    remove(docker, name).await;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        labels: Some(HashMap::from([(MANAGED_LABEL.to_string(), "true".to_string())])),
        host_config: Some(HostConfig { binds: Some(binds), ..Default::default() }),
        ..Default::default()
    };
    docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
    if start {
        docker
            .start_container(name, None::<StartContainerOptions>)
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
    }
}

/// Waits until `path` of the container holds `last` (written last by its script).
async fn wait_for(provider: &Provider, container: &str, path: &str, last: &str) -> TarManifest {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(manifest) = read_manifest(provider, container, path).await {
            if manifest.entries.contains_key(last) {
                return manifest;
            }
        }
        assert!(Instant::now() < deadline, "`{last}` never appeared in {container}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records every progress call, to check they only grow.
#[derive(Default)]
struct Progress(Mutex<Vec<u64>>);

impl Progress {
    fn record(&self, n: u64) {
        self.0.lock().unwrap().push(n);
    }
    fn values(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn copy_between_providers_arrives_intact() {
    let lab = lab();
    let image = lab["images"]["counter"].as_str().unwrap();
    let (a, docker_a) = connect(&lab, "provider-a").await;
    let (b, docker_b) = connect(&lab, "provider-b").await;
    let (src, dst) = ("vmtest-archive-src", "vmtest-archive-dst");
    let script = "mkdir -p /data/sub && dd if=/dev/urandom of=/data/blob bs=1M count=8 2>/dev/null \
                  && echo hi > /data/small && echo nested > /data/sub/n && ln -s small /data/link && sleep 3600";
    container(&docker_a, image, src, script, vec![], true).await;
    // Never started: Docker serves and takes archives of created containers too.
    container(&docker_b, image, dst, "sleep 3600", vec![], false).await;
    let at_source = wait_for(&a, src, "/data", "data/link").await;

    let progress = Progress::default();
    let report = copy_archive(&a, src, "/data", &b, dst, "/", &|n| progress.record(n))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));

    // Docker's archive of `/data` is rooted at the directory's base name.
    let m = &report.manifest;
    assert_eq!(m.top_level(), Some("data"));
    assert_eq!(m.entries["data"], Entry::Dir);
    assert_eq!(m.entries["data/link"], Entry::Symlink { target: "small".into() });
    assert!(matches!(m.entries["data/blob"], Entry::File { size, .. } if size == 8 * MIB));
    assert_eq!(m.total_file_bytes(), 8 * MIB + 3 + 7);
    assert!(report.bytes > m.total_file_bytes() && report.bytes % 512 == 0, "{} bytes", report.bytes);
    assert_eq!(m, &at_source, "the copy read what the source holds");

    let values = progress.values();
    assert!(values.len() > 1, "{values:?}");
    assert!(values.windows(2).all(|w| w[0] < w[1]), "progress must only grow: {values:?}");
    assert_eq!(values.last(), Some(&report.bytes));

    verify_copy(m, &b, dst, "/data", "test data").await.unwrap_or_else(|e| panic!("{}", e.report()));
    let arrived = read_manifest(&b, dst, "/data").await.unwrap();
    assert_eq!(arrived.entries, m.entries, "per-file digests equal on both sides");

    // A tree whose top directory was named differently is compared after rebasing.
    verify_copy(&m.rebased("data", "renamed"), &b, dst, "/data", "renamed data").await.unwrap();

    // A difference is a mismatch that names the file.
    let mut expected = m.clone();
    expected.entries.insert("data/small".into(), Entry::File { size: 3, sha256: [0; 32] });
    let err = verify_copy(&expected, &b, dst, "/data", "test data").await.unwrap_err();
    assert!(matches!(err, Error::Integrity(IntegrityError::Mismatch { .. })), "{}", err.report());
    let report = err.report();
    assert!(report.contains("test data differs") && report.contains("`data/small` has different content"), "{report}");
    assert!(report.contains("provider `provider-b`"), "{report}");

    remove(&docker_a, src).await;
    remove(&docker_b, dst).await;
}

#[tokio::test]
async fn failures_name_provider_container_path_and_direction() {
    let lab = lab();
    let image = lab["images"]["counter"].as_str().unwrap();
    let (a, docker_a) = connect(&lab, "provider-a").await;
    let (b, docker_b) = connect(&lab, "provider-b").await;
    let (src, dst) = ("vmtest-archive-err-src", "vmtest-archive-err-dst");
    container(&docker_a, image, src, "sleep 3600", vec![], false).await;
    container(&docker_b, image, dst, "sleep 3600", vec![], false).await;

    let err = copy_archive(&a, src, "/nope", &b, dst, "/", &|_| {}).await.unwrap_err();
    let report = err.report();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{report}");
    assert!(
        report.starts_with("provider `provider-a`: read `/nope` from container `vmtest-archive-err-src`"),
        "{report}"
    );

    let err = copy_archive(&a, src, "/etc", &b, dst, "/no/such/dir", &|_| {}).await.unwrap_err();
    let report = err.report();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{report}");
    assert!(
        report.starts_with("provider `provider-b`: write into `/no/such/dir` of container `vmtest-archive-err-dst`"),
        "{report}"
    );

    let err = copy_archive(&a, src, "/etc", &b, "vmtest-archive-absent", "/", &|_| {}).await.unwrap_err();
    assert!(
        err.report().contains("provider `provider-b`: write into `/` of container `vmtest-archive-absent`"),
        "{}",
        err.report()
    );

    let err = read_manifest(&a, "vmtest-archive-absent", "/etc").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());

    remove(&docker_a, src).await;
    remove(&docker_b, dst).await;
}

/// The checkpoint path: helper containers that are never started, bind-mounting host
/// directories, read one directory on A and write it into another on B.
#[tokio::test]
async fn never_started_helpers_move_a_bind_mounted_directory() {
    let lab = lab();
    let image = lab["images"]["counter"].as_str().unwrap();
    let (a, docker_a) = connect(&lab, "provider-a").await;
    let (b, docker_b) = connect(&lab, "provider-b").await;
    let root = std::env::temp_dir().join(format!("vimigrate-lab-archive-{}", std::process::id()));
    let (from, to) = (root.join("from"), root.join("to"));
    std::fs::create_dir_all(from.join("cp1")).unwrap();
    std::fs::create_dir_all(&to).unwrap();
    let pages: Vec<u8> = (0..3 * MIB as usize + 17).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(from.join("cp1/pages-1.img"), &pages).unwrap();
    std::fs::write(from.join("cp1/stats-dump"), b"\x01\x02\x03").unwrap();
    let (src, dst) = ("vmtest-archive-helper-src", "vmtest-archive-helper-dst");
    container(&docker_a, image, src, "true", vec![format!("{}:/checkpoint:ro", from.display())], false).await;
    container(&docker_b, image, dst, "true", vec![format!("{}:/checkpoints", to.display())], false).await;

    let report = copy_archive(&a, src, "/checkpoint/cp1", &b, dst, "/checkpoints", &|_| {})
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.manifest.captured["cp1/stats-dump"], b"\x01\x02\x03");
    verify_copy(&report.manifest, &b, dst, "/checkpoints/cp1", "checkpoint images").await.unwrap();
    assert_eq!(std::fs::read(to.join("cp1/pages-1.img")).unwrap(), pages, "the host directory on B got the file");

    remove(&docker_a, src).await;
    remove(&docker_b, dst).await;
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn throughput_of_a_64_mib_copy() {
    let lab = lab();
    let image = lab["images"]["counter"].as_str().unwrap();
    let (a, docker_a) = connect(&lab, "provider-a").await;
    let (b, docker_b) = connect(&lab, "provider-b").await;
    let (src, dst) = ("vmtest-archive-big-src", "vmtest-archive-big-dst");
    let script =
        "mkdir -p /big && dd if=/dev/urandom of=/big/blob bs=1M count=64 2>/dev/null && touch /big/done && sleep 3600";
    container(&docker_a, image, src, script, vec![], true).await;
    container(&docker_b, image, dst, "sleep 3600", vec![], false).await;
    wait_for(&a, src, "/big", "big/done").await;

    let mut rates = Vec::new();
    for _ in 0..3 {
        let report =
            copy_archive(&a, src, "/big", &b, dst, "/", &|_| {}).await.unwrap_or_else(|e| panic!("{}", e.report()));
        assert_eq!(report.manifest.total_file_bytes(), 64 * MIB);
        rates.push(report.bytes as f64 / 1e6 / report.elapsed.as_secs_f64());
    }
    let started = Instant::now();
    let read_back = read_manifest(&b, dst, "/big").await.unwrap();
    let read_rate = 64.0 * MIB as f64 / 1e6 / started.elapsed().as_secs_f64();
    assert_eq!(read_back.total_file_bytes(), 64 * MIB);
    eprintln!(
        "copy_archive of 64 MiB provider-a -> provider-b: {rates:.0?} MB/s; read_manifest alone: {read_rate:.0} MB/s"
    );

    remove(&docker_a, src).await;
    remove(&docker_b, dst).await;
}
