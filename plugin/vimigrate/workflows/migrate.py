"""The ``migrate`` workflow: moves the deployment's containers (all, or ``node_ids``) to another
provider. By default as one group under one freeze (the workflow itself drives the engine's
group migration, then each container's ``record_move`` records where it runs); with ``order:
sequential`` one live migration per container, dependencies first. Either way a failure leaves
the virtual infrastructure where it started: the engine resumes a whole group on its sources,
and a sequence migrates the containers already moved back."""

from __future__ import annotations

import json
import time
from typing import Any

from cloudify.decorators import workflow
from cloudify.exceptions import NonRecoverableError

from .. import _native
from .. import properties as rp
from ..operations._support import provider_config, provider_name
from ..operations.migration import log_phases
from ..shapes import GroupReport, MigrationOptions, ProgressEvent, ProviderConfig
from ..tosca import (
    CONTAINER_TYPE,
    DEPENDS_ON,
    DNS_RECORD_TYPE,
    HEAL_OPERATION,
    MIGRATE_OPERATION,
    NAMES_CONTAINER,
    PROVIDER_TYPE,
    RECORD_OPERATION,
    RELINK_OPERATION,
    SWITCH_OPERATION,
)
from .links import LinkPlan, link_map, merge
from .plan import (
    ContainerState,
    EngineChoices,
    PlanError,
    ProviderInfo,
    Step,
    build_plan,
    host_checks_parameter,
    validate_parameters,
)

#: Attempts at switching a record before the execution fails (the service stays where it moved).
DNS_ATTEMPTS = 3


def _records(ctx: Any) -> list[tuple[Any, str]]:
    """Every DNS record instance with the node id of the container it names."""
    found: list[tuple[Any, str]] = []
    for node in ctx.nodes:
        if DNS_RECORD_TYPE not in node.type_hierarchy:
            continue
        named = [r.target_id for r in node.relationships if r.is_derived_from(NAMES_CONTAINER)]
        for instance in node.instances:
            found.extend((instance, container) for container in named)
    return found


def _switch(ctx: Any, record: Any, ttl: int | None) -> None:
    """Runs the record's switch, retried: a DNS server that is down must not undo a move."""
    last: Exception | None = None
    for attempt in range(1, DNS_ATTEMPTS + 1):
        try:
            record.execute_operation(SWITCH_OPERATION, kwargs={"ttl": ttl}, allow_kwargs_override=True).get()
            return
        except Exception as err:  # noqa: BLE001 - retried, then reported with where things stand
            last = err
            ctx.logger.warning("DNS switch of %s failed (attempt %d of %d): %s", record.node_id, attempt,
                               DNS_ATTEMPTS, err)
            time.sleep(2 * attempt)
    raise NonRecoverableError(
        f"migrate: DNS record {record.node_id} could not be switched: {last}; the containers run where they "
        f"were moved and the record still points at their previous provider: run migrate again or the "
        f"reconcile_dns workflow once the DNS server answers")


def _providers(ctx: Any) -> dict[str, ProviderInfo]:
    return {
        node.id: ProviderInfo(node.id, provider_name(node.id, node.properties),
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
            ports = sorted({p["host_port"] for p in props.get(rp.PORTS, [])})
            pairs = sorted({(p["container_port"], p["host_port"]) for p in props.get(rp.PORTS, [])})
            name = props.get(rp.CONTAINER_NAME)
            names = tuple(dict.fromkeys([*(node.properties.get("aliases") or []), *([name] if name else [])]))
            states.append(ContainerState(
                instance_id=instance.id, node_id=node.id, container_name=name,
                provider_node=props.get(rp.PROVIDER_NODE), depends_on=depends_on,
                networks=tuple(props.get(rp.NETWORKS, [])), host_ports=tuple(ports), names=names,
                addresses=tuple((props.get(rp.ADDRESSES) or {}).values()), port_pairs=tuple(pairs),
                peer_files=tuple(node.properties.get("peer_files") or []),
            ))
    return states


def _public(ctx: Any) -> dict[str, str]:
    return {p.node_id: p.public_address for p in _providers(ctx).values()}


def _target_config(ctx: Any, target_node: str, timeout: int | None) -> ProviderConfig:
    """The engine's configuration of the target provider; `timeout`, when given, replaces its own
    timeout_secs."""
    config = provider_config(target_node, ctx.get_node(target_node).properties, ctx.deployment.id)
    if timeout is not None:
        config["timeout_secs"] = timeout
    return config


def _dependency_links(states: dict[str, ContainerState], state: ContainerState, target_node: str,
                      public: dict[str, str], moving: frozenset[str] | set[str] = frozenset()) -> LinkPlan:
    """The rewrites `state` needs on `target_node` to reach its dependencies; those in `moving`
    are taken where they will be by then: on the target too."""
    peers = [states[d].peer(target_node if d in moving else None) for d in state.depends_on if d in states]
    return merge(*(link_map(peer, target_node, public) for peer in peers))


def _move(ctx: Any, instance_id: str, target_node: str, keep_source: bool, timeout: int | None,
          port_map: dict[str, int], changed: dict[str, str], choices: EngineChoices,
          check_criu: bool = True) -> None:
    """One container to `target_node`, with the rewrites its links need there; then the
    dependants that stay elsewhere are pointed at where it runs now. `timeout`, when given,
    replaces the target provider's own timeout_secs."""
    config = _target_config(ctx, target_node, timeout)
    ctx.refresh_node_instances()
    states = {s.node_id: s for s in _containers(ctx)}
    instance = ctx.get_node_instance(instance_id)
    moving = states[instance.node_id]
    public = _public(ctx)
    plan = _dependency_links(states, moving, target_node, public)
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
        **choices,
        "check_criu": check_criu,
    }, allow_kwargs_override=True).get()
    ctx.refresh_node_instances()
    moved_instance = ctx.get_node_instance(instance_id)
    changed.update(moved_instance.runtime_properties.get(rp.LAST_ADDRESS_CHANGES) or {})
    after = _containers(ctx)
    moved = next(s for s in after if s.instance_id == moving.instance_id)
    for user in after:
        if moving.node_id not in user.depends_on or not user.peer_files or user.node_id == moving.node_id:
            continue
        relink = link_map(moved.peer(), user.provider_node or "", public)
        relink.address_map = {**changed, **relink.address_map}
        ctx.get_node_instance(user.instance_id).execute_operation(
            RELINK_OPERATION, kwargs={"address_map": relink.address_map}, allow_kwargs_override=True).get()


def _group_members(ctx: Any, steps: list[Step], target_node: str, keep_source: bool, port_map: dict[str, int],
                   choices: EngineChoices) -> list[tuple[_native.Provider, MigrationOptions]]:
    """Each container of the group with its source and its options: the rewrites its links need
    on the target for dependencies outside the group (the engine decides the members' own new
    addresses)."""
    ctx.refresh_node_instances()
    states = {s.node_id: s for s in _containers(ctx)}
    moving = {step.node_id for step in steps}
    public = _public(ctx)
    members = []
    # One connection per provider: its members share what it learnt of its host.
    connections: dict[str, _native.Provider] = {}
    for step in steps:
        state = states[step.node_id]
        links = _dependency_links(states, state, target_node, public, moving)
        for problem in links.unreachable:
            ctx.logger.warning("%s will not reach its dependency: %s", state.node_id, problem)
        source_config = ctx.get_node_instance(step.instance_id).runtime_properties[rp.PROVIDER_CONFIG]
        options = MigrationOptions(container=state.container_name or step.container, keep_source=keep_source,
                                   address_map=links.address_map, peer_files=list(state.peer_files),
                                   port_map=port_map, method=choices["method"], memory=choices["memory"],
                                   compression=choices["compression"],
                                   ignore_host_checks=choices["ignore_host_checks"])
        key = json.dumps(source_config, sort_keys=True)
        source = connections.get(key) or connections.setdefault(key, _native.Provider.connect(source_config))
        members.append((source, options))
    return members


def _move_group(ctx: Any, steps: list[Step], target_node: str, keep_source: bool, timeout: int | None,
                port_map: dict[str, int], choices: EngineChoices) -> GroupReport:
    """Every container of `steps` to `target_node` under one freeze, then each one's location
    recorded and the dependants that stay elsewhere pointed at where it runs now. A failure is
    the engine's, after it resumed every member on its source."""
    config = _target_config(ctx, target_node, timeout)
    members = _group_members(ctx, steps, target_node, keep_source, port_map, choices)
    names = ", ".join(step.container for step in steps)
    ctx.send_event(f"migrating {names} to {steps[0].target} as one group").get()
    events: dict[str, list[tuple[float, ProgressEvent]]] = {options["container"]: [] for _, options in members}

    def progress(event: ProgressEvent) -> None:
        events[event.get("container", "")].append((time.monotonic(), event))

    try:
        report = _native.migrate_group(_native.Provider.connect(config), members, progress)
    except _native.MigrationFailedError as err:
        for container, seen in events.items():
            log_phases(seen, ctx.logger, f"{container}: ")
        raise NonRecoverableError(f"migrate: {err}") from None
    for container, seen in events.items():
        log_phases(seen, ctx.logger, f"{container}: ")
    stats = report["stats"]
    ctx.send_event(f"{names} now run on {steps[0].target}: downtime {stats['downtime_ms']} ms for the group "
                   f"(longest member {stats['longest_member_downtime_ms']} ms), freezes started within "
                   f"{stats['freeze_spread_ms']:.2f} ms, total {stats['total_ms']} ms").get()
    for step, member in zip(steps, report["members"], strict=True):
        ctx.get_node_instance(step.instance_id).execute_operation(RECORD_OPERATION, kwargs={
            "target_provider_node": target_node, "target_provider": config, "report": member,
        }, allow_kwargs_override=True).get()
    ctx.refresh_node_instances()
    after = _containers(ctx)
    moved = {step.node_id for step in steps}
    public = _public(ctx)
    for user in after:
        if user.node_id in moved or not user.peer_files:
            continue
        relink = merge(*(link_map(s.peer(), user.provider_node or "", public)
                         for s in after if s.node_id in moved and s.node_id in user.depends_on))
        relink.address_map = {**report["address_changes"], **relink.address_map}
        if relink.address_map:
            ctx.get_node_instance(user.instance_id).execute_operation(
                RELINK_OPERATION, kwargs={"address_map": relink.address_map}, allow_kwargs_override=True).get()
    return report


def _group_plan(ctx: Any, steps: list[Step], target_node: str, timeout: int | None, port_map: dict[str, int],
                choices: EngineChoices) -> list[str]:
    """The engine's plan of the group (each member's, and the gate), logged; returns the
    refusals."""
    members = _group_members(ctx, steps, target_node, False, port_map, choices)
    try:
        plan = _native.plan_group(_native.Provider.connect(_target_config(ctx, target_node, timeout)), members)
    except _native.VimigrateError as err:
        ctx.logger.error("  the group's preflight would refuse it: %s", err)
        return [str(err)]
    for line in plan["gate"]:
        ctx.logger.info("  %s", line)
    for member in plan["members"]:
        for line in member["lines"]:
            ctx.logger.info("  %s", line)
    return []


def _engine_plans(ctx: Any, plan_steps: list[Step], target_node: str, timeout: int | None,
                  port_map: dict[str, int], choices: EngineChoices) -> list[str]:
    """The engine's own plan of each move, from the preflight the migration itself runs
    (read-only: no lock, no CRIU proof), logged line by line; returns the refusals. A container
    whose dependency moves before it is planned as it will be then: next to it."""
    if not plan_steps:
        return []
    config = _target_config(ctx, target_node, timeout)
    states = {s.node_id: s for s in _containers(ctx)}
    moving = {step.node_id for step in plan_steps}
    public = _public(ctx)
    refused: list[str] = []
    try:
        destination = _native.Provider.connect(config)
    except _native.VimigrateError as err:
        ctx.logger.error("  %s cannot be reached: %s", target_node, err)
        return [f"{target_node}: {err}"]
    for step in plan_steps:
        state = states[step.node_id]
        links = _dependency_links(states, state, target_node, public, moving)
        source_config = ctx.get_node_instance(step.instance_id).runtime_properties[rp.PROVIDER_CONFIG]
        options = {"container": state.container_name or step.container, "address_map": links.address_map,
                   "peer_files": list(state.peer_files), "port_map": port_map, **choices}
        try:
            engine_plan = _native.plan_migration(_native.Provider.connect(source_config), destination, options)
        except _native.VimigrateError as err:
            ctx.logger.error("  %s: the preflight would refuse it: %s", step.container, err)
            refused.append(f"{step.container}: {err}")
            continue
        for line in engine_plan["lines"]:
            ctx.logger.info("  %s", line)
    return refused


@workflow
def migrate(ctx: Any, target_provider: Any = None, node_ids: Any = None, keep_source: Any = False,
            dry_run: Any = False, timeout: Any = None, port_map: Any = None, dns_wait_ttl: Any = True,
            method: Any = "auto", memory: Any = "stop-and-copy", compression: Any = "auto",
            ignore_host_checks: Any = None, order: Any = "group", **_ignored: Any) -> None:
    """Moves the virtual infrastructure's containers to `target_provider`. Parameters are
    `Any`: they come from the execution as the DSL let them through (see plugin.yaml), and
    validate_parameters checks what it does not."""
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
                                       {c.node_id for c in containers}, method, memory, compression, order)
        choices = EngineChoices(method=method, memory=memory, compression=compression,
                                ignore_host_checks=host_checks_parameter(ignore_host_checks))
        plan = build_plan(target_provider, selected, containers, providers)
    except PlanError as err:
        raise NonRecoverableError(f"migrate: {err}; nothing was changed") from None
    for line in plan.describe():
        ctx.logger.info(line)
    moving = {step.node_id for step in plan.moves}
    records = [(r, c) for r, c in _records(ctx) if c in moving]
    for record, _ in records:
        props = record.node.properties
        ctx.logger.info("  DNS %s.%s %s: -> %s, TTL %s s lowered to %s s during the move", props.get("name"),
                        props.get("zone"), props.get("type", "A"), providers[target_provider].public_address,
                        props.get("ttl"), props.get("migration_ttl"))
    # One container is a group of one: it takes the sequence's path, which logs its phases. A
    # post-copy cannot be rolled back once a member restored, so neither could its peers: its
    # containers move one after another.
    grouped = order == "group" and len(plan.moves) > 1 and memory != "post-copy"
    if order == "group" and len(plan.moves) > 1 and not grouped:
        ctx.logger.info("memory post-copy: the containers move one after another, not as one group (a post-copy "
                        "cannot be rolled back once a member restored, so neither could its peers)")
    if dry_run:
        if grouped:
            refused = _group_plan(ctx, plan.moves, target_provider, timeout, port_map, choices)
        else:
            refused = _engine_plans(ctx, plan.moves, target_provider, timeout, port_map, choices)
        if refused:
            raise NonRecoverableError(f"dry run: the migration would be refused: {'; '.join(refused)}; "
                                      f"nothing was changed")
        ctx.logger.info("dry run: nothing was changed")
        return
    if records:
        for record, _ in records:
            _switch(ctx, record, int(record.node.properties["migration_ttl"]))
        wait = max(int(r.node.properties["ttl"]) for r, _ in records)
        if dns_wait_ttl is not False and wait > 0:
            ctx.send_event(f"waiting out the previous DNS TTL ({wait} s) so resolvers hold the lowered one").get()
            time.sleep(wait)
    if grouped:
        _move_group(ctx, plan.moves, target_provider, keep_source, timeout, port_map, choices)
        # Right after the group: every record names a container that moved with it.
        for record, _ in records:
            _switch(ctx, record, int(record.node.properties["migration_ttl"]))
            ctx.send_event(f"DNS {record.node_id} now points at {providers[target_provider].name}").get()
        for record, _ in records:
            _switch(ctx, record, None)
        ctx.logger.info("migration done: %d container(s) on %s, as one group", len(plan.moves),
                        providers[target_provider].name)
        return
    moved: list[Step] = []
    changed: dict[str, str] = {}
    for step in plan.moves:
        ctx.send_event(f"migrating {step.container} from {step.source} to {step.target}").get()
        started = time.monotonic()
        try:
            # CRIU is proved on both hosts by the first move; the next ones skip the proof (about
            # 1.4 s each), which matters while a container that moved waits for its peers.
            _move(ctx, step.instance_id, step.target_node, keep_source, timeout, port_map, changed, choices,
                  check_criu=not moved)
        except Exception as err:  # noqa: BLE001 - any failure triggers the VI rollback below
            ctx.send_event(f"migration of {step.container} failed: {err}").get()
            undone = _roll_back(ctx, moved, keep_source, timeout, changed, choices)
            raise NonRecoverableError(
                f"migrate: moving {step.container} from {step.source} to {step.target} failed: {err}; {undone}"
            ) from None
        moved.append(step)
        ctx.send_event(f"{step.container} now runs on {step.target} "
                       f"({time.monotonic() - started:.1f} s)").get()
        for record, container in records:
            if container == step.node_id:
                _switch(ctx, record, int(record.node.properties["migration_ttl"]))
                ctx.send_event(f"DNS {record.node_id} now points at {step.target}").get()
    for record, _ in records:
        _switch(ctx, record, None)
    ctx.logger.info("migration done: %d container(s) on %s", len(moved), providers[target_provider].name)


@workflow
def heal(ctx: Any, restart_from_image: Any = False, **_ignored: Any) -> None:
    """After a migration that did not finish (its process died, a provider did not answer
    during the rollback, a post-copy lost the container): each container runs on exactly one
    provider again, what the migration left is removed, runtime properties say where each runs,
    and DNS records follow. `restart_from_image` lets a container whose process state is lost
    start afresh from its image."""
    if not isinstance(restart_from_image, bool):
        raise NonRecoverableError(f"heal: invalid `restart_from_image`: expected true or false, got "
                                  f"{restart_from_image!r}; nothing was changed")
    configs = {node.id: provider_config(node.id, node.properties, ctx.deployment.id)
               for node in ctx.nodes if PROVIDER_TYPE in node.type_hierarchy}
    for node in ctx.nodes:
        if CONTAINER_TYPE not in node.type_hierarchy:
            continue
        for instance in node.instances:
            ctx.send_event(f"healing {node.id}").get()
            instance.execute_operation(HEAL_OPERATION,
                                       kwargs={"providers": configs, "restart_from_image": restart_from_image},
                                       allow_kwargs_override=True).get()
    for record, _ in _records(ctx):
        _switch(ctx, record, None)
    ctx.logger.info("heal done: every container runs on one provider")


@workflow
def reconcile_dns(ctx: Any, **_ignored: Any) -> None:
    """Points every DNS record at the provider its container runs on now, with its own TTL
    (after a DNS server was unreachable during a migration)."""
    for record, _ in _records(ctx):
        _switch(ctx, record, None)
        ctx.send_event(f"DNS {record.node_id} reconciled").get()


def _roll_back(ctx: Any, moved: list[Step], keep_source: bool, timeout: int | None, changed: dict[str, str],
               choices: EngineChoices) -> str:
    """Migrates the already-moved containers back, last first."""
    if not moved:
        return "no other container had moved: the virtual infrastructure is where it was"
    failures = []
    for step in reversed(moved):
        ctx.send_event(f"rolling back: {step.container} to {step.source}").get()
        try:
            reverse = {new: old for old, new in changed.items()}
            _move(ctx, step.instance_id, step.source_node, keep_source, timeout, {}, reverse, choices,
                  check_criu=False)
        except Exception as err:  # noqa: BLE001 - report every failed rollback, go on with the rest
            failures.append(f"{step.container}: {err}")
    if failures:
        return "ROLLBACK INCOMPLETE: " + "; ".join(failures)
    return f"rolled back {', '.join(s.container for s in moved)} to {moved[0].source}"
