"""Operations of ``vimigrate.nodes.Container``: create it (with its networks) on the provider it
runs on, and delete it from wherever it runs now."""

from __future__ import annotations

from typing import Any, cast

from cloudify import ctx
from cloudify.decorators import operation

from .. import _native
from .. import properties as rp
from ..shapes import ContainerSpec, NetworkSpec
from ..tosca import CONNECTED_TO_NETWORK, RUNS_ON
from ._support import default_name, map_errors, provider_config, single_target, store_location, targets


def _container_name() -> str:
    return str(ctx.node.properties.get("container_name") or default_name(ctx.deployment.id, ctx.node.id))


def _spec(networks: list[NetworkSpec]) -> ContainerSpec:
    props = ctx.node.properties
    labels = dict(props.get("labels") or {})
    labels.update({"io.vimigrate.deployment": ctx.deployment.id, "io.vimigrate.node": ctx.node.id})
    spec: dict[str, Any] = {
        "name": _container_name(),
        "image": props.get("image", ""),
        "env": {str(k): str(v) for k, v in (props.get("env") or {}).items()},
        "labels": labels,
        "ports": list(props.get("ports") or []),
        "volumes": list(props.get("volumes") or []),
        "networks": [
            {"network": net["name"], "aliases": list(props.get("aliases") or [])} for net in networks
        ],
    }
    # An empty value in the blueprint keeps the image's own.
    for key in ("command", "entrypoint", "hostname", "working_dir", "user"):
        if props.get(key):
            spec[key] = props[key]
    return cast(ContainerSpec, spec)


def _network_spec(target: Any) -> NetworkSpec:
    props = target.node.properties
    spec = NetworkSpec(name=props.get("network_name") or default_name(ctx.deployment.id, target.node.id))
    if props.get("subnet"):
        spec["subnet"] = props["subnet"]
    if props.get("gateway"):
        spec["gateway"] = props["gateway"]
    return spec


@operation(resumable=True)
@map_errors
def create(**_: Any) -> None:
    """Creates the container's networks (unless they exist) and the container on its provider,
    starts it, and stores where it runs (``properties.LOCATION``), its name and its networks."""
    host = single_target(ctx, RUNS_ON, "provider")
    config = provider_config(host.node.id, host.node.properties, ctx.deployment.id)
    provider = _native.Provider.connect(config)
    networks = [_network_spec(t) for t in targets(ctx, CONNECTED_TO_NETWORK)]
    for network in networks:
        provider.ensure_network(network)
    deployed = provider.deploy_container(_spec(networks))
    props = ctx.instance.runtime_properties
    store_location(props, host.node.id, config, deployed)
    props[rp.CONTAINER_NAME] = deployed["name"]
    props[rp.NETWORKS] = [n["name"] for n in networks]
    ctx.logger.info(
        "container %s running on %s (%s), addresses %s, published %s",
        deployed["name"], config["name"], deployed["id"][:12], deployed["addresses"], props[rp.PUBLIC_ENDPOINTS],
    )


@operation(resumable=True)
@map_errors
def delete(**_: Any) -> None:
    """Removes the container from the provider it runs on now (``provider_node``, which a
    migration updates), then each of its networks that no other container still uses."""
    props = ctx.instance.runtime_properties
    config = props.get(rp.PROVIDER_CONFIG)
    if config is None:
        ctx.logger.info("container %s was never created: nothing to delete", _container_name())
        return
    provider = _native.Provider.connect(config)
    removed = provider.remove_container(props.get(rp.CONTAINER_NAME) or _container_name())
    for network in props.get(rp.NETWORKS, []):
        provider.remove_network(network, only_if_unused=True)
    ctx.logger.info("container %s %s", _container_name(), "removed" if removed else "was already gone")
    for key in rp.LOCATION:
        props.pop(key, None)
