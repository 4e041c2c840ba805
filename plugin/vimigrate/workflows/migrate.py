"""The ``migrate`` workflow: moves the deployment's containers (all, or ``node_ids``) to another
provider, dependencies first, one live migration per container; if one fails, the containers
already moved are migrated back, so the virtual infrastructure ends where it started."""

from __future__ import annotations

import time
from typing import Any

from cloudify.decorators import workflow
from cloudify.exceptions import NonRecoverableError

from ..operations._support import provider_config
from .links import link_map, merge
from .plan import (
    CONTAINER_TYPE,
    DEPENDS_ON,
    PROVIDER_TYPE,
    ContainerState,
    PlanError,
    ProviderInfo,
    build_plan,
    validate_parameters,
)

#: The container interface operation that moves one container.
MIGRATE_OPERATION = "vimigrate.interfaces.migration.migrate"
#: The container interface operation that points a staying container's peer files elsewhere.
RELINK_OPERATION = "vimigrate.interfaces.migration.relink"


def _providers(ctx: Any) -> dict[str, ProviderInfo]:
    return {
        node.id: ProviderInfo(node.id, node.properties.get("provider_name") or node.id,
                              node.properties.get("public_address") or "")
        for node in ctx.nodes if PROVIDER_TYPE in node.type_hierarchy
    }


def _containers(ctx: Any) -> list[ContainerState]:
    states = []
    for node in ctx.nodes:
        if CONTAINER_TYPE not in node.type_hierarchy:
            continue
        depends_on = tuple(r.target_id for r in node.relationships if r.is_derived_from(DEPENDS_ON))
        for instance in node.instances:
            props = instance.runtime_properties
            ports = sorted({p["host_port"] for p in props.get("ports", [])})
            pairs = sorted({(p["container_port"], p["host_port"]) for p in props.get("ports", [])})
            name = props.get("container_name")
            names = tuple(dict.fromkeys([*(node.properties.get("aliases") or []), *([name] if name else [])]))
            states.append(ContainerState(
                instance_id=instance.id, node_id=node.id, container_name=name,
                provider_node=props.get("provider_node"), depends_on=depends_on,
                networks=tuple(props.get("networks", [])), host_ports=tuple(ports), names=names,
                addresses=tuple((props.get("addresses") or {}).values()), port_pairs=tuple(pairs),
                peer_files=tuple(node.properties.get("peer_files") or []),
            ))
    return states


def _public(ctx: Any) -> dict[str, str]:
    return {p.node_id: p.public_address for p in _providers(ctx).values()}


def _move(ctx: Any, instance_id: str, target_node: str, keep_source: bool, timeout: int,
          port_map: dict, changed: dict[str, str]) -> None:
    """One container to `target_node`, with the rewrites its links need there; then the
    dependants that stay elsewhere are pointed at where it runs now."""
    target = ctx.get_node(target_node)
    config = provider_config(target_node, target.properties, ctx.deployment.id)
    config["timeout_secs"] = timeout
    ctx.refresh_node_instances()
    states = {s.node_id: s for s in _containers(ctx)}
    instance = ctx.get_node_instance(instance_id)
    moving = states[instance.node_id]
    public = _public(ctx)
    plan = merge(*(link_map(states[d].peer(), target_node, public) for d in moving.depends_on if d in states))
    for problem in plan.unreachable:
        ctx.logger.warning("%s will not reach its dependency: %s", moving.node_id, problem)
    address_map = {**changed, **plan.address_map}
    instance.execute_operation(MIGRATE_OPERATION, kwargs={
        "target_provider_node": target_node,
        "target_provider": config,
        "keep_source": keep_source,
        "address_map": address_map,
        "peer_files": list(moving.peer_files),
        "port_map": port_map,
    }, allow_kwargs_override=True).get()
    ctx.refresh_node_instances()
    moved_instance = ctx.get_node_instance(instance_id)
    changed.update(moved_instance.runtime_properties.get("last_address_changes") or {})
    moved = {s.node_id: s for s in _containers(ctx)}[moving.node_id]
    for user in _containers(ctx):
        if moving.node_id not in user.depends_on or not user.peer_files or user.node_id == moving.node_id:
            continue
        relink = link_map(moved.peer(), user.provider_node or "", public)
        relink.address_map = {**changed, **relink.address_map}
        ctx.get_node_instance(user.instance_id).execute_operation(
            RELINK_OPERATION, kwargs={"address_map": relink.address_map}, allow_kwargs_override=True).get()


@workflow
def migrate(ctx: Any, target_provider: Any = None, node_ids: Any = None, keep_source: Any = False,
            dry_run: Any = False, timeout: Any = 120, port_map: Any = None, **_: Any) -> None:
    """Moves the virtual infrastructure's containers to `target_provider`."""
    port_map = port_map or {}
    if not isinstance(port_map, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                 for v in port_map.values()):
        raise NonRecoverableError(f"migrate: invalid `port_map`: expected a mapping of host port to host port, "
                                  f"got {port_map!r}; nothing was changed")
    port_map = {str(k): v for k, v in port_map.items()}
    providers = _providers(ctx)
    containers = _containers(ctx)
    try:
        selected = validate_parameters(target_provider, node_ids, keep_source, dry_run, timeout, providers,
                                       {c.node_id for c in containers})
        plan = build_plan(target_provider, selected, containers, providers)
    except PlanError as err:
        raise NonRecoverableError(f"migrate: {err}; nothing was changed") from None
    for line in plan.describe():
        ctx.logger.info(line)
    if dry_run:
        ctx.logger.info("dry run: nothing was changed")
        return
    moved = []
    changed: dict[str, str] = {}
    for step in plan.moves:
        ctx.send_event(f"migrating {step.container} from {step.source} to {step.target}").get()
        started = time.monotonic()
        try:
            _move(ctx, step.instance_id, step.target_node, keep_source, timeout, port_map, changed)
        except Exception as err:  # noqa: BLE001 - any failure triggers the VI rollback below
            ctx.send_event(f"migration of {step.container} failed: {err}").get()
            undone = _roll_back(ctx, moved, keep_source, timeout, changed)
            raise NonRecoverableError(
                f"migrate: moving {step.container} from {step.source} to {step.target} failed: {err}; {undone}"
            ) from None
        moved.append(step)
        ctx.send_event(f"{step.container} now runs on {step.target} "
                       f"({time.monotonic() - started:.1f} s)").get()
    ctx.logger.info("migration done: %d container(s) on %s", len(moved), providers[target_provider].name)


def _roll_back(ctx: Any, moved: list, keep_source: bool, timeout: int, changed: dict[str, str]) -> str:
    """Migrates the already-moved containers back, last first."""
    if not moved:
        return "no other container had moved: the virtual infrastructure is where it was"
    failures = []
    for step in reversed(moved):
        ctx.send_event(f"rolling back: {step.container} to {step.source}").get()
        try:
            reverse = {new: old for old, new in changed.items()}
            _move(ctx, step.instance_id, step.source_node, keep_source, timeout, {}, reverse)
        except Exception as err:  # noqa: BLE001 - report every failed rollback, go on with the rest
            failures.append(f"{step.container}: {err}")
    if failures:
        return "ROLLBACK INCOMPLETE: " + "; ".join(failures)
    return f"rolled back {', '.join(s.container for s in moved)} to {moved[0].source}"
