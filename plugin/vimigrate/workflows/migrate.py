"""The ``migrate`` workflow: moves the deployment's containers (all, or ``node_ids``) to another
provider, dependencies first, one live migration per container; if one fails, the containers
already moved are migrated back, so the virtual infrastructure ends where it started."""

from __future__ import annotations

import time
from typing import Any

from cloudify.decorators import workflow
from cloudify.exceptions import NonRecoverableError

from ..operations._support import provider_config
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
            states.append(ContainerState(
                instance_id=instance.id, node_id=node.id, container_name=props.get("container_name"),
                provider_node=props.get("provider_node"), depends_on=depends_on,
                networks=tuple(props.get("networks", [])), host_ports=tuple(ports),
            ))
    return states


def _move(ctx: Any, instance_id: str, target_node: str, keep_source: bool, timeout: int) -> None:
    target = ctx.get_node(target_node)
    config = provider_config(target_node, target.properties, ctx.deployment.id)
    config["timeout_secs"] = timeout
    instance = ctx.get_node_instance(instance_id)
    result = instance.execute_operation(MIGRATE_OPERATION, kwargs={
        "target_provider_node": target_node,
        "target_provider": config,
        "keep_source": keep_source,
    }, allow_kwargs_override=True)
    result.get()


@workflow
def migrate(ctx: Any, target_provider: Any = None, node_ids: Any = None, keep_source: Any = False,
            dry_run: Any = False, timeout: Any = 120, **_: Any) -> None:
    """Moves the virtual infrastructure's containers to `target_provider`."""
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
    for step in plan.moves:
        ctx.send_event(f"migrating {step.container} from {step.source} to {step.target}").get()
        started = time.monotonic()
        try:
            _move(ctx, step.instance_id, step.target_node, keep_source, timeout)
        except Exception as err:  # noqa: BLE001 - any failure triggers the VI rollback below
            ctx.send_event(f"migration of {step.container} failed: {err}").get()
            undone = _roll_back(ctx, moved, keep_source, timeout)
            raise NonRecoverableError(
                f"migrate: moving {step.container} from {step.source} to {step.target} failed: {err}; {undone}"
            ) from None
        moved.append(step)
        ctx.send_event(f"{step.container} now runs on {step.target} "
                       f"({time.monotonic() - started:.1f} s)").get()
    ctx.logger.info("migration done: %d container(s) on %s", len(moved), providers[target_provider].name)


def _roll_back(ctx: Any, moved: list, keep_source: bool, timeout: int) -> str:
    """Migrates the already-moved containers back, last first."""
    if not moved:
        return "no other container had moved: the virtual infrastructure is where it was"
    failures = []
    for step in reversed(moved):
        ctx.send_event(f"rolling back: {step.container} to {step.source}").get()
        try:
            _move(ctx, step.instance_id, step.source_node, keep_source, timeout)
        except Exception as err:  # noqa: BLE001 - report every failed rollback, go on with the rest
            failures.append(f"{step.container}: {err}")
    if failures:
        return "ROLLBACK INCOMPLETE: " + "; ".join(failures)
    return f"rolled back {', '.join(s.container for s in moved)} to {moved[0].source}"
