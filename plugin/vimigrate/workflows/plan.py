"""The migration plan: which containers move where, in which order, with what effect. Computed
from the deployment's nodes before anything changes; printed by ``dry_run``; executed by the
``migrate`` workflow. Pure logic, no Cloudify import, so it is tested on its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ..shapes import Compression, HostCheckKind, MemoryMode, Method
from ..tosca import CONTAINER_TYPE, PROVIDER_TYPE
from .links import Peer, link_map


class PlanError(ValueError):
    """A workflow parameter is wrong; `field` names it. Nothing was changed."""

    def __init__(self, field_name: str, expected: str, got: Any) -> None:
        super().__init__(f"invalid `{field_name}`: expected {expected}, got {got!r}")
        self.field = field_name


@dataclass(frozen=True)
class ContainerState:
    """A container node instance as the deployment knows it now."""

    instance_id: str
    node_id: str
    container_name: str | None
    provider_node: str | None
    depends_on: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    host_ports: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    port_pairs: tuple[tuple[int, int], ...] = ()
    peer_files: tuple[str, ...] = ()

    def peer(self, provider_node: str | None = None) -> Peer:
        """This container as its dependants see it (on `provider_node` when given)."""
        return Peer(self.node_id, provider_node or self.provider_node or "", self.names, self.addresses,
                    self.port_pairs)


@dataclass(frozen=True)
class ProviderInfo:
    """A provider node: its name and where its published ports answer."""

    node_id: str
    name: str
    public_address: str


@dataclass
class Step:
    """One container's move, or why it does not move."""

    instance_id: str
    node_id: str
    container: str
    source_node: str
    source: str
    target_node: str
    target: str
    networks: list[str] = field(default_factory=list)
    endpoints_before: list[str] = field(default_factory=list)
    endpoints_after: list[str] = field(default_factory=list)
    skip: str | None = None
    rewrites: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.skip:
            return f"{self.container} ({self.node_id}): stays on {self.source}: {self.skip}"
        text = f"{self.container} ({self.node_id}): {self.source} -> {self.target}"
        if self.networks:
            text += f"; networks on {self.target}: {', '.join(self.networks)}"
        if self.endpoints_before:
            text += f"; published {', '.join(self.endpoints_before)} -> {', '.join(self.endpoints_after)}"
        for rewrite in self.rewrites:
            text += f"\n     rewrite {rewrite}"
        return text


@dataclass
class Plan:
    """The ordered steps of a migration."""

    target_node: str
    steps: list[Step]

    @property
    def moves(self) -> list[Step]:
        return [s for s in self.steps if not s.skip]

    def describe(self) -> list[str]:
        lines = [f"migration plan to {self.target_node}: {len(self.moves)} container(s) move"]
        lines += [f"  {i}. {step.describe()}" for i, step in enumerate(self.steps, 1)]
        lines.append("  internal addresses: kept where the target has the subnet free, else chosen there and "
                     "rewritten in the environment and peer files of the containers that name them")
        return lines


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise PlanError(name, "true or false", value)


#: Values of the migrate workflow's `method` parameter (the engine's `Method`).
METHODS = ("auto", "direct", "docker")
#: Values of its `memory` parameter (the engine's `MemoryMode`).
MEMORY_MODES = ("stop-and-copy", "pre-copy", "post-copy", "auto")
#: Values of its `compression` parameter (the engine's `Compression`).
COMPRESSIONS = ("auto", "zstd", "off")
#: How the migrate workflow orders its moves (plugin.yaml's `order`).
ORDERS = ("group", "sequential")
#: Values of its `ignore_host_checks` parameter (the engine's `HostCheckKind`).
HOST_CHECKS = ("cpu", "criu", "cgroup", "engine")


class EngineChoices(TypedDict):
    """The engine options every move of one workflow run takes as the user gave them."""

    method: Method
    memory: MemoryMode
    compression: Compression
    ignore_host_checks: list[HostCheckKind]


def host_checks_parameter(value: Any) -> list[HostCheckKind]:
    """The `ignore_host_checks` parameter as a list of check names (`cfy ... -p
    ignore_host_checks=cpu,criu` arrives as one string); raises PlanError naming it."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        value = [n.strip() for n in value.strip().strip("[]").split(",") if n.strip()]
    if not isinstance(value, list) or not all(isinstance(n, str) and n in HOST_CHECKS for n in value):
        raise PlanError("ignore_host_checks", f"a list of host checks to override ({', '.join(HOST_CHECKS)})", value)
    return list(value)


def validate_parameters(target_provider: Any, node_ids: Any, keep_source: Any, dry_run: Any, timeout: Any,
                        providers: dict[str, ProviderInfo], container_nodes: Iterable[str],
                        method: Any = "auto", memory: Any = "stop-and-copy",
                        compression: Any = "auto", order: Any = "group") -> list[str] | None:
    """Checks every workflow parameter; raises PlanError naming the first wrong one. Returns the
    selected container node ids (None: all of them)."""
    if not isinstance(target_provider, str) or target_provider not in providers:
        raise PlanError("target_provider", f"the id of a {PROVIDER_TYPE} node ({', '.join(sorted(providers))})",
                        target_provider)
    if method not in METHODS:
        raise PlanError("method", f"one of {', '.join(METHODS)}", method)
    if memory not in MEMORY_MODES:
        raise PlanError("memory", f"one of {', '.join(MEMORY_MODES)}", memory)
    # YAML 1.1 reads an unquoted `off` as false.
    if compression not in COMPRESSIONS:
        raise PlanError("compression", f"one of {', '.join(COMPRESSIONS)} (quote \"off\" in YAML)", compression)
    if order not in ORDERS:
        raise PlanError("order", f"one of {', '.join(ORDERS)}", order)
    _as_bool("keep_source", keep_source)
    _as_bool("dry_run", dry_run)
    # No timeout: each provider's own timeout_secs. The range is the engine's, checked here too
    # so that a wrong one stops the workflow before any DNS record or container changes.
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or not 1 <= timeout <= 3600):
        raise PlanError("timeout", "seconds in 1..3600, or null for each provider's own timeout_secs", timeout)
    known = sorted(container_nodes)
    if isinstance(node_ids, str):
        # `cfy ... -p node_ids=web,redis` (or `=[web,redis]`) arrives as one string.
        node_ids = [n.strip() for n in node_ids.strip().strip("[]").split(",") if n.strip()]
    if node_ids in (None, [], ""):
        return None
    if not isinstance(node_ids, list) or not all(isinstance(n, str) for n in node_ids):
        raise PlanError("node_ids", "a list of node ids", node_ids)
    unknown = [n for n in node_ids if n not in known]
    if unknown:
        raise PlanError("node_ids", f"ids of {CONTAINER_TYPE} nodes ({', '.join(known)})", unknown)
    return list(node_ids)


def order_by_dependencies(containers: list[ContainerState]) -> list[ContainerState]:
    """Dependencies first (a database before the web server that uses it), ties by node id; a
    dependency cycle is an error."""
    by_node: dict[str, list[ContainerState]] = {}
    for c in containers:
        by_node.setdefault(c.node_id, []).append(c)
    ordered: list[ContainerState] = []
    state: dict[str, str] = {}

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == "done" or node_id not in by_node:
            return
        if state.get(node_id) == "visiting":
            raise PlanError("node_ids", "containers without a dependency cycle", " -> ".join(path + [node_id]))
        state[node_id] = "visiting"
        for dep in sorted({d for c in by_node[node_id] for d in c.depends_on}):
            visit(dep, path + [node_id])
        state[node_id] = "done"
        ordered.extend(sorted(by_node[node_id], key=lambda c: c.instance_id))

    for node_id in sorted(by_node):
        visit(node_id, [])
    return ordered


def _simulate_links(steps: list[Step], containers: list[ContainerState], providers: dict[str, ProviderInfo]) -> None:
    """Fills each step's rewrites: the links of the moving container to its dependencies, and
    of the dependants left elsewhere to it, as they will be after that step."""
    public = {p.node_id: p.public_address for p in providers.values()}
    where = {c.node_id: c.provider_node for c in containers}
    by_node = {c.node_id: c for c in containers}
    for step in steps:
        if step.skip:
            continue
        moving = by_node[step.node_id]
        where[moving.node_id] = step.target_node
        for dep in moving.depends_on:
            if dep in by_node:
                plan = link_map(by_node[dep].peer(where[dep]), step.target_node, public)
                step.rewrites += [f"{step.container}: {old} -> {new}" for old, new in sorted(plan.address_map.items())
                                  if not old.startswith(tuple(f"{a}:" for a in public.values()))]
                step.rewrites += [f"{step.container}: cannot reach {u}" for u in plan.unreachable]
        for user in containers:
            if moving.node_id in user.depends_on and user.node_id != moving.node_id and user.peer_files:
                plan = link_map(moving.peer(step.target_node), where[user.node_id] or "", public)
                if where[user.node_id] != step.target_node:
                    step.rewrites += [f"{user.container_name or user.node_id} (stays): {old} -> {new}"
                                      for old, new in sorted(plan.address_map.items())
                                      if not old.startswith(tuple(f"{a}:" for a in public.values()))]


def build_plan(target_node: str, selected: list[str] | None, containers: list[ContainerState],
               providers: dict[str, ProviderInfo]) -> Plan:
    """The steps for moving the selected containers (all when `selected` is None) to
    `target_node`."""
    chosen = [c for c in containers if selected is None or c.node_id in selected]
    target = providers[target_node]
    steps = []
    for c in order_by_dependencies(chosen):
        source = providers.get(c.provider_node or "")
        step = Step(
            instance_id=c.instance_id, node_id=c.node_id, container=c.container_name or c.node_id,
            source_node=c.provider_node or "-", source=source.name if source else "-",
            target_node=target_node, target=target.name, networks=list(c.networks),
            endpoints_before=[f"{source.public_address}:{p}" for p in c.host_ports] if source else [],
            endpoints_after=[f"{target.public_address}:{p}" for p in c.host_ports],
        )
        if c.provider_node is None:
            step.skip = "not installed"
        elif c.provider_node == target_node:
            step.skip = "already there"
        steps.append(step)
    _simulate_links(steps, containers, providers)
    return Plan(target_node=target_node, steps=steps)
