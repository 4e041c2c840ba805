//! Against the lab's real Docker daemons (`make lab-up`): stream an image that only provider-a
//! has to provider-b, find it present the second time, and fail clearly for an absent image.
//! Run with `cargo test -p vimigrate-core --features lab-tests --test lab_images -- --nocapture`
//! (the redis test prints the measured throughput).
#![cfg(feature = "lab-tests")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptions, CreateContainerOptions, RemoveContainerOptions, RemoveImageOptions, TagImageOptions,
};
use bollard::Docker;
use common::lab;
use futures_util::StreamExt;
use vimigrate_core::{ensure_image, image_platform, ErrorKind, Provider, ProviderConfig};

fn config(lab: &serde_json::Value, name: &str) -> ProviderConfig {
    common::config_with_timeout(lab, name, 120)
}

/// A plain Docker client for the test's own setup, which the engine does not expose.
async fn docker(lab: &serde_json::Value, name: &str) -> Docker {
    let host = lab["providers"][name]["docker_host"].as_str().expect("docker_host");
    let path = host.strip_prefix("unix://").expect("the lab's providers listen on unix sockets");
    Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("{name} is not reachable at {host} ({e}); run `make lab-up`"))
}

async fn providers(lab: &serde_json::Value) -> (Provider, Provider) {
    let connect = |name: &'static str| async move {
        Provider::connect(&config(lab, name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {}; run `make lab-up`", e.report()))
    };
    (connect("provider-a").await, connect("provider-b").await)
}

fn unique() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Builds an image that exists on `docker` only: the lab's counter image plus a file with
/// `marker` in it, committed as `repo:tag`.
async fn commit_marked_image(docker: &Docker, base: &str, repo: &str, tag: &str, marker: &str) -> String {
    let name = format!("vmtest-img-build-{tag}");
    let body = ContainerCreateBody {
        image: Some(base.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), format!("echo {marker} > /vimigrate-marker")]),
        ..Default::default()
    };
    let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
    docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&name, None).await.unwrap();
    let mut wait = docker.wait_container(&name, None);
    while let Some(status) = wait.next().await {
        assert_eq!(status.unwrap().status_code, 0, "the marker command succeeds");
    }
    let commit = CommitContainerOptions {
        container: Some(name.clone()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let id = docker.commit_container(commit, ContainerConfig::default()).await.unwrap().id;
    docker.remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() })).await.unwrap();
    id
}

/// Removes `image` (a reference: only the tag goes when other references share the id).
async fn remove_image(docker: &Docker, image: &str) {
    let options = RemoveImageOptions { force: true, ..Default::default() };
    match docker.remove_image(image, Some(options), None).await {
        Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => panic!("cleanup of {image}: {e}"),
    }
}

#[tokio::test]
async fn image_only_on_a_is_streamed_to_b_once() {
    let lab = lab();
    let (a, b) = providers(&lab).await;
    let (docker_a, docker_b) = (docker(&lab, "provider-a").await, docker(&lab, "provider-b").await);
    let tag = unique();
    let image = format!("vimigrate-test/img:{tag}");
    let base = lab["images"]["counter"].as_str().unwrap();
    let built_id = commit_marked_image(&docker_a, base, "vimigrate-test/img", &tag, &tag).await;

    let calls = AtomicU64::new(0);
    let last = AtomicU64::new(0);
    let progress = |total: u64| {
        calls.fetch_add(1, Ordering::Relaxed);
        // Totals only grow.
        assert!(last.swap(total, Ordering::Relaxed) <= total);
    };
    let first = ensure_image(&a, &b, &image, &progress).await;
    let second = ensure_image(&a, &b, &image, &|_| panic!("nothing streams the second time")).await;
    let platform = image_platform(&b, &image).await;
    let on_b = docker_b.inspect_image(&image).await.map(|i| i.id);

    remove_image(&docker_a, &image).await;
    remove_image(&docker_b, &image).await;

    let first = first.unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(first.transferred, "{first:?}");
    assert!(first.bytes > 0, "{first:?}");
    assert_eq!(first.image_id, built_id);
    assert_eq!(on_b.unwrap().as_deref(), Some(built_id.as_str()), "provider-b has the very same image");
    assert_eq!(last.load(Ordering::Relaxed), first.bytes, "the last progress report is the total");
    assert!(calls.load(Ordering::Relaxed) >= 1);

    let second = second.unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(!second.transferred, "{second:?}");
    assert_eq!(second.bytes, 0);
    assert_eq!(second.image_id, built_id);

    let (os, arch) = platform.unwrap();
    assert_eq!(os, "linux");
    assert!(!arch.is_empty());
    println!("test image: {} bytes in {} ms", first.bytes, first.elapsed_ms);
}

#[tokio::test]
async fn image_absent_on_the_source_is_not_found() {
    let lab = lab();
    let (a, b) = providers(&lab).await;
    let image = format!("vimigrate-test/img:absent-{}", unique());
    let err = ensure_image(&a, &b, &image, &|_| {}).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());
    let report = err.report();
    assert!(report.contains("provider `provider-a`"), "{report}");
    assert!(report.contains("provider `provider-b`"), "{report}");
    assert!(report.contains(&image), "{report}");
    let err = image_platform(&a, &image).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());
}

/// The lab's redis image under a fresh tag on provider-a: provider-b lacks that reference, so the
/// whole archive streams (its layers are already on provider-b, which the load then reuses).
#[tokio::test]
async fn redis_image_throughput() {
    let lab = lab();
    let (a, b) = providers(&lab).await;
    let (docker_a, docker_b) = (docker(&lab, "provider-a").await, docker(&lab, "provider-b").await);
    let tag = unique();
    let image = format!("vimigrate-test/redis:{tag}");
    let redis = lab["images"]["redis"].as_str().unwrap();
    let options = TagImageOptions { repo: Some("vimigrate-test/redis".into()), tag: Some(tag.clone()) };
    docker_a.tag_image(redis, Some(options)).await.unwrap();

    let moved = ensure_image(&a, &b, &image, &|_| {}).await;

    remove_image(&docker_a, &image).await;
    remove_image(&docker_b, &image).await;

    let moved = moved.unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(moved.transferred && moved.bytes > 0, "{moved:?}");
    let mb_per_s = moved.bytes as f64 / 1e6 / (moved.elapsed_ms.max(1) as f64 / 1e3);
    println!("redis image: {} bytes in {} ms = {mb_per_s:.1} MB/s", moved.bytes, moved.elapsed_ms);
    // Both redis references still resolve on provider-b: only the test tag went.
    assert!(docker_b.inspect_image(redis).await.is_ok());
}

/// A fresh image with a 100 MB incompressible layer that provider-b has never seen, so the load
/// stores every byte. Slow-ish; run with `-- --ignored --nocapture` to measure.
#[tokio::test]
#[ignore]
async fn fresh_100mb_image_throughput() {
    let lab = lab();
    let (a, b) = providers(&lab).await;
    let (docker_a, docker_b) = (docker(&lab, "provider-a").await, docker(&lab, "provider-b").await);
    let tag = unique();
    let image = format!("vimigrate-test/big:{tag}");
    let base = lab["images"]["counter"].as_str().unwrap();
    let marker = format!("{tag}; head -c 100000000 /dev/urandom > /vimigrate-big");
    commit_marked_image(&docker_a, base, "vimigrate-test/big", &tag, &marker).await;

    let moved = ensure_image(&a, &b, &image, &|_| {}).await;

    remove_image(&docker_a, &image).await;
    remove_image(&docker_b, &image).await;

    let moved = moved.unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(moved.transferred && moved.bytes > 100_000_000, "{moved:?}");
    let mb_per_s = moved.bytes as f64 / 1e6 / (moved.elapsed_ms.max(1) as f64 / 1e3);
    println!("fresh image: {} bytes in {} ms = {mb_per_s:.1} MB/s", moved.bytes, moved.elapsed_ms);
}
