//! Preflight: every check that can fail before anything changes, on both providers, ending in
//! the [`MigrationPlan`] the migration follows (and a dry run prints). Nothing here writes to a
//! provider but the CRIU proof and the host-facts probe (dry runs too: what differs between the
//! hosts is what a dry run is for), which remove their probe containers whatever happens.

use crate::checkpoint::criu_options::CriuTcp;
use crate::error::{Error, InputError, ProviderError};
use crate::migration::compression;
use crate::migration::host_checks::{self, HostView};
use crate::migration::memory::{self, MemoryMode};
use crate::migration::options::{CheckedOptions, MigrationOptions};
use crate::migration::plan::{self, MigrationPlan, PathFacts};
use crate::migration::source::SourceContainer;
use crate::network::map::{self as network_map, NetworkDecision};
use crate::provider::image::{image_platform, same_image};
use crate::provider::probe::ProviderReport;
use crate::provider::Provider;
use vimigrate_protocol::HostFacts;

/// The source container, as the migration will move it; the options are checked first, and
/// the two providers must differ.
pub(crate) async fn find_source(
    src: &Provider,
    dst: &Provider,
    options: &MigrationOptions,
) -> Result<(SourceContainer, CheckedOptions), Error> {
    let checked = options.checked()?;
    if src.name() == dst.name() {
        return Err(InputError::new("destination", "a provider other than the source", dst.name()).into());
    }
    let name = &options.container;
    let inspect = src
        .inspect_container_raw(name)
        .await?
        .ok_or_else(|| InputError::new("container", format!("a container on {}", src.name()), name))?;
    let mut source = SourceContainer::from_inspect(inspect);
    // The container runs the image it was created from; its reference may name another image by
    // now (a rebuilt `latest`). Move and run exactly the image it runs.
    let named = src.docker().inspect_image(&source.image).await.ok().and_then(|i| i.id);
    if named.as_deref() != Some(source.image_id.as_str()) && !source.image_id.is_empty() {
        tracing::info!(container = %source.name, reference = %source.image, id = %source.image_id,
            "the image reference names another image now; migrating by id");
        source.image = source.image_id.clone();
    }
    Ok((source, checked))
}

/// Whether the preflight proves checkpoint/restore on both hosts (when the options ask for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CriuProof {
    /// Prove it, as a migration does: a probe container checkpointed and restored on each host.
    Run,
    /// Only plan it: a dry run changes nothing.
    Skip,
}

/// Every other check that can fail before anything changes; returns the plan.
pub(crate) async fn preflight(
    src: &Provider,
    dst: &Provider,
    options: &MigrationOptions,
    checked: &CheckedOptions,
    source: &SourceContainer,
    proof: CriuProof,
) -> Result<MigrationPlan, Error> {
    let name = &options.container;
    if !source.running {
        return Err(InputError::new("container", "a running container", format!("{name} ({})", source.status)).into());
    }
    if source.auto_remove {
        return Err(InputError::new(
            "container",
            "a container without auto-remove (--rm): Docker would delete it, and the checkpoint to roll back to, at the freeze",
            name,
        )
        .into());
    }
    if !source.host_binds.is_empty() {
        return Err(InputError::new(
            "container",
            "no bind mount of a host path (it cannot follow the container to another host; use a named volume)",
            source.host_binds.join(", "),
        )
        .into());
    }
    let (src_report, dst_report) = tokio::try_join!(src.probe(), dst.probe())?;
    for report in [&src_report, &dst_report] {
        if !report.experimental {
            return Err(ProviderError::Unsuitable {
                provider: report.name.clone(),
                requirement: "experimental mode (dockerd --experimental) for checkpoint/restore",
                detail: format!("Docker {} runs without it", report.server_version),
            }
            .into());
        }
    }
    let path = plan::choose_path(PathFacts {
        wanted: options.method,
        source_has_runtime: src_report.vimigrate_runtime,
        destination_has_runtime: dst_report.vimigrate_runtime,
        container_runtime: source.runtime.as_deref(),
        destination: dst.name(),
        destination_host: dst.transfer_address(),
    })
    .map_err(|detail| ProviderError::Unsuitable {
        provider: dst.name().to_string(),
        requirement: "the direct migration path (method direct)",
        detail,
    })?;
    if let plan::PlannedPath::Docker { reason } = &path {
        tracing::info!(container = %source.name, %reason, "migrating through Docker's checkpoint API");
    }
    // The container list, not an inspect: an inspect waits for a start in progress there.
    if dst.container_exists(&source.name).await? {
        return Err(ProviderError::NameTaken {
            provider: dst.name().to_string(),
            what: "container",
            name: source.name.clone(),
            reason: "is already in use on the destination",
        }
        .into());
    }
    let (_, image_arch) = image_platform(src, &source.image).await?;
    if !image_arch.is_empty() && image_arch != dst_report.arch {
        return Err(ProviderError::Unsuitable {
            provider: dst.name().to_string(),
            requirement: "the image's architecture",
            detail: format!("image `{}` is {image_arch}, the destination is {}", source.image, dst_report.arch),
        }
        .into());
    }
    let image_on_destination = image_on(src, dst, source).await;
    let networks = plan_networks(src, dst, source).await?;
    let forwarding =
        plan::forwarding(dst.name(), &source.host_ports, &checked.port_map, &dst.published_ports().await?)?;
    for (i, path) in options.peer_files.iter().enumerate() {
        if src.read_file(&source.id, path).await?.is_none() {
            return Err(InputError::new(
                format!("peer_files[{i}]"),
                "an absolute path of a file in the container",
                path,
            )
            .into());
        }
    }
    // The hosts' own facts (CPU, CRIU) read by their runtimes, and the CRIU proof, on both hosts
    // at once. Every probe runs to its end, so each removes its own container: with try_join a
    // failure on one host would drop the others mid-way, their removal left to a task that a
    // CLI exiting on the error never runs.
    let facts = async {
        tokio::join!(host_facts_of(src, src_report.vimigrate_runtime), host_facts_of(dst, dst_report.vimigrate_runtime))
    };
    let proved = async {
        if options.check_criu && proof == CriuProof::Run {
            let (on_src, on_dst) = tokio::join!(src.check_criu(), dst.check_criu());
            on_src?;
            on_dst?;
        }
        Ok::<(), Error>(())
    };
    let ((src_facts, dst_facts), proved) = tokio::join!(facts, proved);
    let (src_facts, dst_facts) = (src_facts?, dst_facts?);
    let direct = matches!(path, plan::PlannedPath::Direct { .. });
    let network_after_restore = [(src.name(), &src_report, &src_facts), (dst.name(), &dst_report, &dst_facts)]
        .into_iter()
        .find_map(|(name, report, facts)| {
            lacks_restore_addresses(direct, report, facts.as_ref()).then_some((name, report.server_version.as_str()))
        });
    let (tcp, tcp_reason) = plan::tcp_mode(options.criu_tcp, &networks, network_after_restore).map_err(|detail| {
        ProviderError::Unsuitable {
            provider: network_after_restore.map_or(dst.name(), |(name, _)| name).to_string(),
            requirement: "criu_tcp established",
            detail,
        }
    })?;
    let facts = ((src.name(), src_facts.as_ref()), (dst.name(), dst_facts.as_ref()));
    let (memory, memory_reason) =
        memory::decide(options.memory, direct, facts.0, facts.1).map_err(|(mode, detail)| {
            ProviderError::Unsuitable {
                provider: if mode == MemoryMode::PreCopy { src.name() } else { dst.name() }.to_string(),
                requirement: if mode == MemoryMode::PreCopy { "memory pre-copy" } else { "memory post-copy" },
                detail,
            }
        })?;
    let (compression, compression_reason) = compression::decide(
        options.compression,
        direct,
        (src.name(), src_facts.as_ref()),
        (dst.name(), dst_facts.as_ref()),
    )
    .map_err(|detail| ProviderError::Unsuitable {
        provider: dst.name().to_string(),
        requirement: "compression zstd",
        detail,
    })?;
    let hosts = host_checks::compare_hosts(
        HostView { report: &src_report, facts: src_facts.as_ref() },
        HostView { report: &dst_report, facts: dst_facts.as_ref() },
        match &path {
            plan::PlannedPath::Docker { reason } => Some(reason.as_str()),
            plan::PlannedPath::Direct { .. } => None,
        },
        tcp,
        &options.ignore_host_checks,
    );
    for check in hosts.checks.iter().filter(|c| c.outcome != host_checks::CheckOutcome::Note) {
        tracing::warn!(provider = %check.provider, check = ?check.check, outcome = ?check.outcome, detail = %check.detail, "host check");
    }
    if let Some(refusal) = hosts.refusal() {
        return Err(ProviderError::HostMismatch {
            provider: refusal.provider.clone(),
            check: refusal.check.map(|c| c.name()).unwrap_or("host"),
            detail: refusal.detail.clone(),
        }
        .into());
    }
    proved?;
    Ok(MigrationPlan {
        container: source.name.clone(),
        source: src.name().to_string(),
        destination: dst.name().to_string(),
        source_id: source.id.clone(),
        checkpoint: checked.checkpoint.clone(),
        image: source.image.clone(),
        image_on_destination,
        path,
        networks,
        forwarding,
        tcp,
        tcp_reason,
        memory,
        memory_reason,
        compression,
        compression_reason,
        pre_copy: (memory == MemoryMode::PreCopy).then(vimigrate_protocol::PreCopy::default),
        destination_runtime: plan::destination_runtime(dst_report.vimigrate_runtime, source.runtime.as_deref()),
        address_map: options.address_map.clone(),
        assigned_addresses: std::collections::BTreeMap::new(),
        rewrite_sockets: false,
        sockets_can_follow: direct && network_after_restore.is_none() && options.criu_tcp == CriuTcp::Auto,
        peer_files: options.peer_files.clone(),
        criu_check: options.check_criu,
        hosts,
    })
}

/// Whether a restore on this host (the destination's, or the source's own at a rollback) would
/// find the container's network namespace without the addresses its sockets need: from Docker
/// 28 on the daemon wires a container's network once its task exists, after the direct path's
/// restore, and only a runtime that holds the addresses meanwhile restores established
/// connections there. Docker's own path cannot restore on those engines at all.
fn lacks_restore_addresses(direct: bool, report: &ProviderReport, facts: Option<&HostFacts>) -> bool {
    direct
        && report.engine_major() >= 28
        && !facts.is_some_and(|f| f.runtime_has(vimigrate_protocol::HOLDS_RESTORE_ADDRESSES))
}

/// The host's facts through its runtime; `None` without one.
async fn host_facts_of(provider: &Provider, has_runtime: bool) -> Result<Option<HostFacts>, Error> {
    if !has_runtime {
        return Ok(None);
    }
    provider.host_facts().await
}

/// Whether `dst` has the image the container runs (the same image, whatever each engine's store
/// calls its id).
async fn image_on(src: &Provider, dst: &Provider, source: &SourceContainer) -> bool {
    let Ok(found) = dst.docker().inspect_image(&source.image).await else { return false };
    if found.id.as_deref() == Some(source.image_id.as_str()) {
        return true;
    }
    let Ok(original) = src.docker().inspect_image(&source.image_id).await else { return false };
    same_image(&original, &found)
}

/// Decides, for each network of the container, whether the destination keeps its subnet.
async fn plan_networks(
    src: &Provider,
    dst: &Provider,
    source: &SourceContainer,
) -> Result<Vec<NetworkDecision>, Error> {
    let existing = dst.list_networks().await?;
    let mut decisions = Vec::new();
    for ep in &source.networks {
        let info = src.inspect_network(&ep.network).await?.ok_or_else(|| {
            InputError::new("container", format!("a container whose network `{}` exists", ep.network), &source.name)
        })?;
        let decision = network_map::decide(&info, &existing);
        tracing::info!(network = %decision.name, mode = ?decision.mode, reason = %decision.reason, "network mapping");
        decisions.push(decision);
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_engine_28_host_whose_runtime_cannot_hold_the_addresses_lacks_them() {
        let engine = |version: &str| ProviderReport { server_version: version.into(), ..Default::default() };
        let with_feature = HostFacts {
            runtime_features: vec![vimigrate_protocol::HOLDS_RESTORE_ADDRESSES.into()],
            ..Default::default()
        };
        let without = HostFacts::default();
        assert!(lacks_restore_addresses(true, &engine("28.5.2"), Some(&without)));
        assert!(lacks_restore_addresses(true, &engine("29.1.0"), None));
        assert!(!lacks_restore_addresses(true, &engine("28.5.2"), Some(&with_feature)));
        assert!(!lacks_restore_addresses(true, &engine("26.1.5"), Some(&without)), "Docker's hook wires it before");
        assert!(!lacks_restore_addresses(false, &engine("28.5.2"), None), "Docker's path is refused there anyway");
    }
}
