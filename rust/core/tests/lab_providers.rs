//! Against the lab's real Docker daemons (`make lab-up`): connect, probe, deploy a container with
//! a published port that answers at the provider's public address, and clean up.
//! Run with `cargo test -p vimigrate-core --features lab-tests`.
#![cfg(feature = "lab-tests")]

mod common;

use std::time::Duration;

use common::config;
use common::lab;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vimigrate_core::{ContainerSpec, ErrorKind, NetworkSpec, Provider};

async fn redis_ping(address: &str, port: u16) -> std::io::Result<String> {
    let connect = tokio::net::TcpStream::connect((address, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(3), connect).await??;
    stream.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

#[tokio::test]
async fn both_providers_are_experimental_docker_20_10() {
    let lab = lab();
    for name in ["provider-a", "provider-b"] {
        let provider = Provider::connect(&config(&lab, name)).await.unwrap_or_else(|e| panic!("{}", e.report()));
        let report = provider.probe().await.unwrap();
        assert!(report.experimental, "{name} must run dockerd --experimental");
        assert_eq!(report.api_version, "1.41", "{name}: Docker 20.10 negotiates API 1.41");
        assert!(report.docker_root_dir.contains(name), "{name}: its own data-root, got {}", report.docker_root_dir);
    }
}

#[tokio::test]
async fn published_redis_answers_at_each_public_address() {
    let lab = lab();
    for (name, port) in [("provider-a", 16301u16), ("provider-b", 16302u16)] {
        let cfg = config(&lab, name);
        let provider = Provider::connect(&cfg).await.unwrap();
        let network =
            NetworkSpec { name: "vmtest-core-net".into(), subnet: None, gateway: None, labels: Default::default() };
        provider.ensure_network(&network).await.unwrap();
        let spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "name": "vmtest-core-redis",
            "image": lab["images"]["redis"],
            "hostname": "redis",
            "ports": [{"container_port": 6379, "host_port": port}],
            "networks": [{"network": "vmtest-core-net", "aliases": ["db"]}],
        }))
        .unwrap();
        let deployed = provider.deploy_container(&spec).await.unwrap_or_else(|e| panic!("{}", e.report()));
        // Deploying again is idempotent: the same container comes back.
        let again = provider.deploy_container(&spec).await.unwrap();
        assert_eq!(deployed.id, again.id);
        assert!(deployed.running);
        assert!(deployed.addresses.contains_key("vmtest-core-net"), "{:?}", deployed.addresses);
        assert_eq!(deployed.ports[0].host_port, port);

        let public = cfg.public_address.as_deref().unwrap();
        let mut answer = Err(std::io::Error::other("not tried"));
        for _ in 0..30 {
            answer = redis_ping(public, port).await;
            if answer.as_ref().is_ok_and(|a| a == "+PONG") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(answer.unwrap(), "+PONG", "{name}: redis at {public}:{port}");

        assert!(provider.remove_container("vmtest-core-redis").await.unwrap());
        assert!(!provider.remove_container("vmtest-core-redis").await.unwrap(), "second removal finds nothing");
        assert!(provider.remove_network("vmtest-core-net", true).await.unwrap());
        assert!(provider.inspect_deployed("vmtest-core-redis").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn missing_image_is_a_clear_error_and_leaves_nothing() {
    let lab = lab();
    let provider = Provider::connect(&config(&lab, "provider-a")).await.unwrap();
    let spec: ContainerSpec = serde_json::from_value(
        serde_json::json!({"name": "vmtest-core-noimage", "image": "vimigrate-lab/absent:none"}),
    )
    .unwrap();
    let err = provider.deploy_container(&spec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());
    assert!(err.report().contains("create container `vmtest-core-noimage`"), "{}", err.report());
    assert!(provider.inspect_deployed("vmtest-core-noimage").await.unwrap().is_none());
}

#[tokio::test]
async fn same_name_for_another_owner_is_a_conflict_and_untouched() {
    let lab = lab();
    let provider = Provider::connect(&config(&lab, "provider-b")).await.unwrap();
    let spec = |owner: &str| -> ContainerSpec {
        serde_json::from_value(serde_json::json!({
            "name": "vmtest-core-owned", "image": lab["images"]["counter"], "labels": {"io.vimigrate.deployment": owner},
        }))
        .unwrap()
    };
    let first = provider.deploy_container(&spec("dep-one")).await.unwrap();
    let err = provider.deploy_container(&spec("dep-two")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{}", err.report());
    assert!(err.report().contains("was created for another owner"), "{}", err.report());
    let still = provider.inspect_deployed("vmtest-core-owned").await.unwrap().unwrap();
    assert_eq!(still.id, first.id);
    assert!(still.running);
    provider.remove_container("vmtest-core-owned").await.unwrap();
}
