//! Against the lab's real Docker daemons (`make lab-up`): the CRIU probe, and checkpoint/restore
//! of a counting container through the engine's checkpoint methods.
//! Run with `cargo test -p vimigrate-core --features lab-tests --test lab_checkpoint`.
#![cfg(feature = "lab-tests")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::{KillContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use common::config;
use common::lab;
use futures_util::TryStreamExt;
use vimigrate_core::{ContainerSpec, ErrorKind, Provider};

async fn connect(lab: &serde_json::Value, name: &str) -> Provider {
    Provider::connect(&config(lab, name))
        .await
        .unwrap_or_else(|e| panic!("{name} is not reachable ({}); run `make lab-up`", e.report()))
}

/// A plain Docker client on the same daemon, to look at it independently of the engine.
async fn raw_docker(lab: &serde_json::Value, name: &str) -> Docker {
    let host = lab["providers"][name]["docker_host"].as_str().unwrap();
    let socket = host.trim_start_matches("unix://");
    Docker::connect_with_unix(socket, 60, bollard::API_DEFAULT_VERSION).unwrap().negotiate_version().await.unwrap()
}

/// The numbers the counter printed so far, in order.
async fn counter_output(docker: &Docker, container: &str) -> Vec<u64> {
    let options = LogsOptionsBuilder::default().stdout(true).build();
    let chunks: Vec<_> = docker.logs(container, Some(options)).try_collect().await.unwrap();
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(&c.clone().into_bytes()).into_owned()).collect();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

async fn deploy_counter(lab: &serde_json::Value, provider: &Provider, name: &str) {
    // A leftover from an interrupted run would make the output checks below meaningless.
    provider.remove_container(name).await.unwrap();
    let spec: ContainerSpec =
        serde_json::from_value(serde_json::json!({"name": name, "image": lab["images"]["counter"]})).unwrap();
    let deployed = provider.deploy_container(&spec).await.unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(deployed.running);
}

#[tokio::test]
async fn check_criu_succeeds_on_both_providers_and_leaves_no_container() {
    let lab = lab();
    for name in ["provider-a", "provider-b"] {
        let provider = connect(&lab, name).await;
        let check = provider.check_criu().await.unwrap_or_else(|e| panic!("{name}: {}", e.report()));
        println!("{name}: {check:?}");
        assert_eq!(check.image, format!("vimigrate/criu-probe:{}", vimigrate_core::VERSION));
        assert!(check.checkpoint_ms > 0 && check.restore_ms > 0, "{check:?}");
        // A second run reuses the imported image.
        let again = provider.check_criu().await.unwrap_or_else(|e| panic!("{name}: {}", e.report()));
        println!("{name}, image already there: {again:?}");

        let docker = raw_docker(&lab, name).await;
        // Only this process's probes: other test binaries may be probing at the same time.
        let ours = format!("vimigrate-criu-probe-{}-", std::process::id());
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let left: Vec<String> = docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .filter(|n| n.trim_start_matches('/').starts_with(&ours))
            .collect();
        assert!(left.is_empty(), "{name}: probe containers left behind: {left:?}");
    }
}

#[tokio::test]
async fn checkpoint_and_restore_continue_the_counter() {
    let lab = lab();
    let provider = connect(&lab, "provider-a").await;
    let docker = raw_docker(&lab, "provider-a").await;
    let name = "vmtest-cp-counter";
    deploy_counter(&lab, &provider, name).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    provider.create_checkpoint(name, "cp1").await.unwrap_or_else(|e| panic!("{}", e.report()));
    let before = counter_output(&docker, name).await;
    assert!(before.len() >= 2, "the counter printed {before:?}");
    let inspect = docker.inspect_container(name, None).await.unwrap();
    assert_eq!(inspect.state.as_ref().and_then(|s| s.running), Some(false), "Exit: true stops the container");
    assert_eq!(provider.list_checkpoints(name).await.unwrap(), ["cp1"]);

    let parent = provider.checkpoint_parent_dir(name).await.unwrap();
    let data_root = lab["providers"]["provider-a"]["data_root"].as_str().unwrap();
    assert_eq!(parent, format!("{data_root}/containers/{}/checkpoints", inspect.id.unwrap()));
    assert!(PathBuf::from(&parent).join("cp1").is_dir(), "checkpoint at {parent}/cp1");

    // Nothing is printed while frozen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counter_output(&docker, name).await, before);

    provider.start_from_checkpoint(name, "cp1").await.unwrap_or_else(|e| panic!("{}", e.report()));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = counter_output(&docker, name).await;
    let resumed = &after[before.len()..];
    assert!(!resumed.is_empty(), "nothing printed after the restore: {after:?}");
    assert_eq!(
        resumed[0],
        before[before.len() - 1] + 1,
        "restored, not restarted: before {before:?}, after {resumed:?}"
    );
    let expected: Vec<u64> = (0..after.len() as u64).collect();
    assert_eq!(after, expected, "one unbroken count");

    assert!(provider.delete_checkpoint(name, "cp1").await.unwrap());
    assert!(!provider.delete_checkpoint(name, "cp1").await.unwrap(), "already gone");
    assert!(provider.list_checkpoints(name).await.unwrap().is_empty());
    assert!(!PathBuf::from(&parent).join("cp1").exists());
    assert!(provider.remove_container(name).await.unwrap());
    assert!(!provider.delete_checkpoint(name, "cp1").await.unwrap(), "container gone, checkpoint gone");
}

#[tokio::test]
async fn restore_from_unknown_checkpoint_fails_and_does_not_start_fresh() {
    let lab = lab();
    let provider = connect(&lab, "provider-a").await;
    let docker = raw_docker(&lab, "provider-a").await;
    let name = "vmtest-cp-unknown";
    deploy_counter(&lab, &provider, name).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    docker.kill_container(name, None::<KillContainerOptions>).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let printed = counter_output(&docker, name).await;

    let err = provider.start_from_checkpoint(name, "no-such-checkpoint").await.unwrap_err();
    let report = err.report();
    println!("{report}");
    assert!(
        report.contains("restore container `vmtest-cp-unknown` from checkpoint `no-such-checkpoint` failed"),
        "{report}"
    );
    assert!(report.contains("does not exist"), "{report}");

    let err = provider.start_from_checkpoint(name, "-bad").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}", err.report());
    let err = provider.create_checkpoint(name, "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "Docker refuses one-character names: {}", err.report());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = docker.inspect_container(name, None).await.unwrap().state.unwrap();
    assert_eq!(state.running, Some(false), "a failed restore must not start the container fresh");
    assert_eq!(counter_output(&docker, name).await, printed, "no fresh count began");
    assert!(provider.remove_container(name).await.unwrap());
}
