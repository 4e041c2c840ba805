"""Operations of ``vimigrate.interfaces.migration`` on a container: one live migration to the
target provider, the relink of a container that stays, and heal after a migration that did not
finish; each leaves the container's runtime properties saying where it runs now."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

from cloudify import ctx
from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError

from .. import _native
from .. import properties as rp
from ..cli import heal_how
from ..shapes import (
    Compression,
    DeployedContainer,
    HostCheckKind,
    MemoryMode,
    Method,
    MigrationOptions,
    MigrationReport,
    ProgressEvent,
    ProviderConfig,
)
from ._support import map_errors, store_location


def log_phases(events: list[tuple[float, ProgressEvent]], logger: Any, prefix: str = "") -> None:
    """One event per phase with its duration, from the engine's progress callbacks (`prefix`
    names the container, for a group's)."""
    phases = [(at, e["phase"]) for at, e in events if e["event"] == "phase"]
    # Each phase lasts until the next one starts, the last one until now.
    for (at, phase), (next_at, _) in itertools.pairwise([*phases, (time.monotonic(), "")]):
        moved = max((e["bytes"] for _, e in events if e["event"] == "bytes" and e["phase"] == phase), default=0)
        suffix = f", {moved / 1e6:.1f} MB" if moved else ""
        logger.info("%sphase %s: %.0f ms%s", prefix, phase, (next_at - at) * 1000, suffix)


@operation(resumable=False)
@map_errors
def migrate(target_provider_node: str, target_provider: ProviderConfig, keep_source: bool = False,
            address_map: Mapping[str, str] | None = None, peer_files: list[str] | None = None,
            port_map: Mapping[str, int] | None = None, method: Method = "auto", check_criu: bool = True,
            ignore_host_checks: list[HostCheckKind] | None = None, memory: MemoryMode = "stop-and-copy",
            compression: Compression = "auto", **_: Any) -> None:
    """Live-migrates this container to `target_provider` (the engine's provider configuration,
    paths only, no secret) and records where it runs now."""
    props = ctx.instance.runtime_properties
    source_config = props.get(rp.PROVIDER_CONFIG)
    if source_config is None:
        raise NonRecoverableError(f"container {ctx.node.id} is not installed: nothing to migrate")
    source = _native.Provider.connect(source_config)
    target = _native.Provider.connect(target_provider)
    events: list[tuple[float, ProgressEvent]] = []
    name = props[rp.CONTAINER_NAME]
    options = MigrationOptions(container=name, keep_source=bool(keep_source), address_map=dict(address_map or {}),
                               peer_files=list(peer_files or []), port_map=dict(port_map or {}), method=method,
                               check_criu=bool(check_criu), ignore_host_checks=list(ignore_host_checks or []),
                               memory=memory, compression=compression)
    try:
        report = _native.migrate(source, target, options, lambda event: events.append((time.monotonic(), event)))
    except _native.MigrationFailedError as err:
        log_phases(events, ctx.logger)
        # The engine already rolled this container back (or says why it could not).
        raise NonRecoverableError(str(err)) from None
    log_phases(events, ctx.logger)
    _record(source, target, target_provider_node, target_provider, report)


@operation(resumable=True)
@map_errors
def record_move(target_provider_node: str, target_provider: ProviderConfig, report: MigrationReport | None = None,
                **_: Any) -> None:
    """Records where this container runs after the `migrate` workflow moved it with its group
    (`report`: its member's report from ``migrate_group``), as ``migrate`` does after its own
    move."""
    props = ctx.instance.runtime_properties
    if report is None or props.get(rp.PROVIDER_CONFIG) is None:
        raise NonRecoverableError(f"container {ctx.node.id}: record_move needs the group member's report")
    source = _native.Provider.connect(props[rp.PROVIDER_CONFIG])
    target = _native.Provider.connect(target_provider)
    _record(source, target, target_provider_node, target_provider, report)


def _record(source: _native.Provider, target: _native.Provider, target_provider_node: str,
            target_provider: ProviderConfig, report: MigrationReport) -> None:
    """After a move: its figures in the log, the source's unused networks removed, and the
    container's runtime properties saying where it runs now."""
    props = ctx.instance.runtime_properties
    name = props[rp.CONTAINER_NAME]
    stats = report["stats"]
    ctx.logger.info("%s moved from %s to %s: downtime %d ms, %d bytes after the freeze, total %d ms",
                    name, report["source"], report["destination"], stats["downtime_ms"], stats["transfer_bytes"],
                    stats["total_ms"])
    ctx.logger.info("memory %s (%s); compression %s, ratio %.2f, %d bytes on the wire", report["memory"],
                    report["memory_reason"], report["compression"], stats["compression_ratio"], stats["wire_bytes"])
    if report["memory"] == "pre-copy":
        ctx.logger.info("pre-copy: %d rounds in %d ms while the service ran, %d bytes; bytes per round %s",
                        stats["predump_rounds"], stats["predump_ms"], stats["predump_bytes"], stats["round_bytes"])
    if report["memory"] == "post-copy":
        ctx.logger.info("post-copy window (a failure of the source or link in it loses the state since the "
                        "restore): %d ms, %d bytes of pages", stats["postcopy_ms"], stats["page_bytes"])
    how = "host to host (vimigrate-runtime)" if report["method"] == "direct" else "through Docker's checkpoint API"
    ctx.logger.info("checkpoint moved %s%s", how, f": {report['method_reason']}" if report["method_reason"] else "")
    kept, closed = stats.get("sockets_kept", 0), stats.get("sockets_closed", 0)
    if kept or closed:
        ctx.logger.info("sockets rewritten to the new addresses: %d connection(s) to group peers kept, %d to "
                        "outside closed", kept, closed)
    for warning in report["warnings"]:
        ctx.logger.warning("cleanup after the move: %s", warning)
    # Networks this container used on the source go once nothing there uses them any more.
    for network in props.get(rp.NETWORKS, []):
        try:
            source.remove_network(network, only_if_unused=True)
        except _native.VimigrateError as err:
            ctx.logger.warning("network %s left on %s: %s", network, report["source"], err)
    deployed: DeployedContainer | dict[str, Any] = target.inspect_container(name) or {}
    history = [*props.get(rp.MIGRATIONS, []),
               {"from": report["source"], "to": report["destination"], "at": time.time(),
                "downtime_ms": stats["downtime_ms"], "total_ms": stats["total_ms"]}]
    store_location(props, target_provider_node, target_provider, deployed, container_id=report["destination_id"])
    props[rp.MIGRATIONS] = history
    props[rp.LAST_MIGRATION] = stats
    props[rp.LAST_ADDRESS_CHANGES] = report["address_changes"]
    for decision in report["networks"]:
        ctx.logger.info("network %s: %s (%s)", decision["name"], decision["mode"], decision["reason"])
    for path, count in report["rewrites"]:
        ctx.logger.info("rewrote %d peer address(es) in %s", count, path)


@operation(resumable=True)
@map_errors
def relink(address_map: Mapping[str, str] | None = None, **_: Any) -> None:
    """Points this (staying) container's declared peer files at where its peers run now, in
    place; its processes read them when they reconnect."""
    props = ctx.instance.runtime_properties
    config = props.get(rp.PROVIDER_CONFIG)
    if config is None or not address_map:
        return
    provider = _native.Provider.connect(config)
    for path in ctx.node.properties.get("peer_files") or []:
        count = provider.rewrite_file(props[rp.CONTAINER_NAME], path, dict(address_map))
        ctx.logger.info("%s: rewrote %d peer address(es) in %s", props[rp.CONTAINER_NAME], count, path)


@operation(resumable=True)
@map_errors
def heal(providers: Mapping[str, ProviderConfig] | None = None, restart_from_image: bool = False, **_: Any) -> None:
    """After a migration that did not finish: makes this container run on exactly one of
    `providers` (node id -> the engine's provider configuration), restored from its checkpoint
    when it runs nowhere (or, with `restart_from_image` and no checkpoint to resume from, started
    afresh from its image), removes what the migration left, and records where it runs now."""
    props = ctx.instance.runtime_properties
    name = props.get(rp.CONTAINER_NAME)
    if not name or not providers:
        ctx.logger.info("%s is not installed: nothing to heal", ctx.node.id)
        return
    connected = {node: _native.Provider.connect(config) for node, config in providers.items()}
    report = _native.heal(list(connected.values()), name, restart_from_image=bool(restart_from_image))
    node = next(n for n, config in providers.items() if config["name"] == report["runs_on"])
    config = providers[node]
    store_location(props, node, config, connected[node].inspect_container(name) or {})
    ctx.logger.info("%s runs on %s%s", name, config["name"], heal_how(report))
    for line in report["removed"]:
        ctx.logger.info("removed %s", line)
