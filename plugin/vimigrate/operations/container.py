"""Operations of ``vimigrate.nodes.Container``: create it (with its networks) on the provider it
runs on, and delete it from wherever it runs now."""

from __future__ import annotations

from typing import Any

from cloudify import ctx
from cloudify.decorators import operation

from .. import _native
from ._support import (
    CONNECTED_TO_NETWORK,
    RUNS_ON,
    default_name,
    map_errors,
    provider_config,
    single_target,
    targets,
)


def _container_name() -> str:
    return ctx.node.properties.get("container_name") or default_name(ctx.deployment.id, ctx.node.id)


def _spec(networks: list[dict[str, Any]]) -> dict[str, Any]:
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
    for key in ("command", "entrypoint", "hostname", "working_dir", "user"):
        if props.get(key):
            spec[key] = props[key]
    return spec


def _network_spec(target: Any) -> dict[str, Any]:
    props = target.node.properties
    spec: dict[str, Any] = {"name": props.get("network_name") or default_name(ctx.deployment.id, target.node.id)}
    for key in ("subnet", "gateway"):
        if props.get(key):
            spec[key] = props[key]
    return spec


@operation(resumable=True)
@map_errors
def create(**_: Any) -> None:
    """Creates the container's networks (unless they exist) and the container on its provider,
    starts it, and stores where it runs: ``provider_node``, ``provider``, ``container_id``,
    ``container_name``, ``addresses``, ``ports`` and ``public_endpoints``."""
    host = single_target(ctx, RUNS_ON, "provider")
    config = provider_config(host.node.id, host.node.properties, ctx.deployment.id)
    provider = _native.Provider.connect(config)
    networks = [_network_spec(t) for t in targets(ctx, CONNECTED_TO_NETWORK)]
    for network in networks:
        provider.ensure_network(network)
    deployed = provider.deploy_container(_spec(networks))
    public = config.get("public_address")
    props = ctx.instance.runtime_properties
    props["provider_node"] = host.node.id
    props["provider"] = config["name"]
    # The connection facts (never a secret: TLS material is referenced by path) travel with the
    # container, so that delete and migrate reach it wherever it runs now.
    props["provider_config"] = config
    props["container_id"] = deployed["id"]
    props["container_name"] = deployed["name"]
    props["networks"] = [n["name"] for n in networks]
    props["addresses"] = deployed["addresses"]
    props["ports"] = deployed["ports"]
    # Docker binds a published port on 0.0.0.0 and on ::; the public endpoint is the same.
    host_ports = sorted({p["host_port"] for p in deployed["ports"]})
    props["public_endpoints"] = [f"{public}:{port}" for port in host_ports] if public else []
    ctx.logger.info(
        "container %s running on %s (%s), addresses %s, published %s",
        deployed["name"], config["name"], deployed["id"][:12], deployed["addresses"], props["public_endpoints"],
    )


@operation(resumable=True)
@map_errors
def delete(**_: Any) -> None:
    """Removes the container from the provider it runs on now (``provider_node``, which a
    migration updates), then each of its networks that no other container still uses."""
    props = ctx.instance.runtime_properties
    config = props.get("provider_config")
    if config is None:
        ctx.logger.info("container %s was never created: nothing to delete", _container_name())
        return
    provider = _native.Provider.connect(config)
    removed = provider.remove_container(props.get("container_name") or _container_name())
    for network in props.get("networks", []):
        provider.remove_network(network, only_if_unused=True)
    ctx.logger.info("container %s %s", _container_name(), "removed" if removed else "was already gone")
    for key in ("provider_node", "provider", "provider_config", "container_id", "addresses", "ports",
                "public_endpoints"):
        props.pop(key, None)
