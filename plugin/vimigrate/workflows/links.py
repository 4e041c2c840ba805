"""How a container reaches a peer it depends on, wherever each of them runs.

On one provider a dependant reaches its dependency internally, by name or address and container
port (``redis:6379``). Split across providers (a partial migration), it goes through the
dependency's provider: its public address and published port (``10.231.0.11:16379``), so no
traffic is relayed by the broker. These functions compute the address rewrites that switch a
dependant between the two forms; the engine applies them to its environment and declared peer
files when it moves, and in place when it stays. Pure logic, no Cloudify import."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Peer:
    """A container as its dependants know it."""

    node_id: str
    provider_node: str
    names: tuple[str, ...]  # container name and aliases: what dependants resolve
    addresses: tuple[str, ...] = ()  # internal IPv4 addresses
    ports: tuple[tuple[int, int], ...] = ()  # (container port, published host port)


@dataclass
class LinkPlan:
    """Rewrites for one dependant and the dependencies it cannot reach."""

    address_map: dict[str, str] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)


def internal_forms(peer: Peer, container_port: int) -> list[str]:
    return [f"{name}:{container_port}" for name in peer.names] + [f"{ip}:{container_port}" for ip in peer.addresses]


def link_map(peer: Peer, user_provider: str, public: dict[str, str]) -> LinkPlan:
    """The rewrites a dependant on `user_provider` needs to reach `peer` where it runs now.
    `public` maps provider node ids to their public addresses."""
    plan = LinkPlan()
    if not peer.names:
        return plan
    canonical = peer.names[0]
    if peer.provider_node == user_provider:
        # Together again: every external form goes back to the internal one.
        for container_port, host_port in peer.ports:
            for address in public.values():
                plan.address_map[f"{address}:{host_port}"] = f"{canonical}:{container_port}"
        return plan
    if not peer.ports:
        plan.unreachable.append(f"{peer.node_id} publishes no port on {peer.provider_node}")
        return plan
    here = public.get(peer.provider_node, "")
    for container_port, host_port in peer.ports:
        target = f"{here}:{host_port}"
        for form in internal_forms(peer, container_port):
            plan.address_map[form] = target
        for provider, address in public.items():
            if provider != peer.provider_node:
                plan.address_map[f"{address}:{host_port}"] = target
    return plan


def merge(*plans: LinkPlan) -> LinkPlan:
    merged = LinkPlan()
    for plan in plans:
        merged.address_map.update(plan.address_map)
        merged.unreachable.extend(plan.unreachable)
    return merged
