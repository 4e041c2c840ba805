"""What every operation shares: reading providers and relationships from the context, and the
one mapping from engine errors to Cloudify's retry semantics."""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Iterable

from cloudify.exceptions import NonRecoverableError, OperationRetry, RecoverableError

from .. import _native

#: Relationship from a container to the provider it runs on.
RUNS_ON = "vimigrate.relationships.container_runs_on_provider"
#: Relationship from a container to a network it joins.
CONNECTED_TO_NETWORK = "vimigrate.relationships.container_connected_to_network"

#: Seconds Cloudify waits before retrying an operation whose provider was unreachable.
RETRY_AFTER_SECONDS = 5


def map_errors(operation: Callable[..., Any]) -> Callable[..., Any]:
    """Maps engine errors to Cloudify's: unreachable providers are worth a retry
    (RecoverableError), everything else is not (NonRecoverableError). The engine's message
    already carries the step and the whole cause chain, so no traceback is added."""

    @functools.wraps(operation)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return operation(*args, **kwargs)
        except _native.ProviderUnavailableError as err:
            raise RecoverableError(str(err), retry_after=RETRY_AFTER_SECONDS) from None
        except _native.VimigrateError as err:
            raise NonRecoverableError(str(err)) from None
        except OperationRetry:
            raise

    return wrapper


def provider_config(node_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The engine's provider configuration from a ``vimigrate.nodes.Provider`` node's properties.
    Fields are passed through unchanged so the engine's validation names them."""
    config: dict[str, Any] = {
        "name": properties.get("provider_name") or node_id,
        "docker_host": properties.get("docker_host", ""),
        "allow_plain_tcp": properties.get("allow_plain_tcp", False),
        "timeout_secs": properties.get("timeout", 120),
    }
    if properties.get("public_address"):
        config["public_address"] = properties["public_address"]
    tls = properties.get("tls") or {}
    if any(tls.get(k) for k in ("ca_file", "cert_file", "key_file")):
        config["tls"] = {"ca": tls.get("ca_file"), "cert": tls.get("cert_file"), "key": tls.get("key_file")}
    return config


def default_name(deployment_id: str, node_id: str) -> str:
    """`<deployment>-<node>` with characters Docker refuses in names replaced: two deployments
    of one blueprint on one provider never clash."""
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{deployment_id}-{node_id}")
    return name if name[:1].isalnum() else f"v{name}"


def targets(ctx: Any, relationship_type: str) -> Iterable[Any]:
    """Targets of this node instance's relationships of `relationship_type` (or derived)."""
    for relationship in ctx.instance.relationships:
        if relationship_type in relationship.type_hierarchy:
            yield relationship.target


def single_target(ctx: Any, relationship_type: str, what: str) -> Any:
    """The one target of `relationship_type`; a clear error when there is none or several."""
    found = list(targets(ctx, relationship_type))
    if len(found) != 1:
        raise NonRecoverableError(
            f"node `{ctx.node.id}` needs exactly one {what} relationship ({relationship_type}), found {len(found)}"
        )
    return found[0]
