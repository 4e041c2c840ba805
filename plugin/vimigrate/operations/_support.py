"""What every operation shares: reading providers and relationships from the context, and the
one mapping from engine errors to Cloudify's retry semantics."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
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


#: Where inline TLS material (e.g. from Cloudify secrets) is written for the engine to read:
#: private files on the host that runs the operations, never runtime properties or logs.
TLS_DIR_ENV = "VIMIGRATE_TLS_DIR"

_PEM_FIELDS = (("ca_cert", "ca", "ca.pem"), ("client_cert", "cert", "cert.pem"), ("client_key", "key", "key.pem"))


def _materialize_tls(deployment_id: str, node_id: str, tls: dict[str, Any]) -> dict[str, str]:
    """Writes inline PEM material to `<dir>/<deployment>/<node>/` (directory 0700, files 0600)
    and returns the engine's file paths; file paths given as such are passed through."""
    paths = {"ca": tls.get("ca_file") or "", "cert": tls.get("cert_file") or "", "key": tls.get("key_file") or ""}
    inline = [(field, key, name) for field, key, name in _PEM_FIELDS if tls.get(field)]
    if inline:
        base = Path(os.environ.get(TLS_DIR_ENV) or Path.home() / ".vimigrate" / "tls")
        directory = base / default_name(deployment_id, node_id)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        for field, key, name in inline:
            path = directory / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(tls[field])
            paths[key] = str(path)
    return paths


def provider_config(node_id: str, properties: dict[str, Any], deployment_id: str = "local") -> dict[str, Any]:
    """The engine's provider configuration from a ``vimigrate.nodes.Provider`` node's properties.
    Fields are passed through unchanged so the engine's validation names them; TLS material
    given inline (PEM text, e.g. from ``get_secret``) is written to private files first, so the
    configuration only ever holds paths."""
    config: dict[str, Any] = {
        "name": properties.get("provider_name") or node_id,
        "docker_host": properties.get("docker_host", ""),
        "allow_plain_tcp": properties.get("allow_plain_tcp", False),
        "timeout_secs": properties.get("timeout", 120),
    }
    for key in ("public_address", "transfer_address"):
        if properties.get(key):
            config[key] = properties[key]
    if properties.get("transfer_port"):
        config["transfer_port"] = properties["transfer_port"]
    tls = properties.get("tls") or {}
    if any(tls.get(k) for k in ("ca_file", "cert_file", "key_file", "ca_cert", "client_cert", "client_key")):
        config["tls"] = _materialize_tls(deployment_id, node_id, tls)
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
