"""What every operation shares: the provider configuration from a node's properties, where a
container runs as runtime properties, relationships, and the one mapping from engine errors to
Cloudify's retry semantics."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TypeVar, cast

from cloudify.exceptions import NonRecoverableError, OperationRetry, RecoverableError

from .. import _native
from .. import properties as rp
from ..shapes import DeployedContainer, ProviderConfig, TlsFiles

#: Seconds Cloudify waits before retrying an operation whose provider was unreachable.
RETRY_AFTER_SECONDS = 5

Operation = TypeVar("Operation", bound=Callable[..., Any])


def map_errors(operation: Operation) -> Operation:
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

    return cast(Operation, wrapper)


#: Where inline TLS material (e.g. from Cloudify secrets) is written for the engine to read:
#: private files on the host that runs the operations, never runtime properties or logs.
TLS_DIR_ENV = "VIMIGRATE_TLS_DIR"

#: The fields of vimigrate.datatypes.TLS that hold PEM text instead of a path (the plugin's own,
#: not the engine's): each becomes the engine's TlsFiles field next to it, through the private
#: file named last.
INLINE_PEM = (("ca_cert", "ca", "ca.pem"), ("client_cert", "cert", "cert.pem"), ("client_key", "key", "key.pem"))


def _tls_files(deployment_id: str, node_id: str, tls: Mapping[str, Any]) -> TlsFiles:
    """The engine's TLS files: paths given as such pass through, inline PEM material is written
    to `<dir>/<deployment>-<node>/` (directory 0700, files 0600) and replaced by its path."""
    inline_fields = {field for field, _, _ in INLINE_PEM}
    files = {key: value for key, value in tls.items() if value is not None and key not in inline_fields}
    inline = [(field, key, name) for field, key, name in INLINE_PEM if tls.get(field)]
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
            files[key] = str(path)
    return cast(TlsFiles, files)


def provider_name(node_id: str, properties: Mapping[str, Any]) -> str:
    """A provider node's name: its `name` property, or the node id when that is empty."""
    return str(properties.get("name") or node_id)


def provider_config(node_id: str, properties: Mapping[str, Any], deployment_id: str = "local") -> ProviderConfig:
    """The engine's provider configuration from a ``vimigrate.nodes.Provider`` node's properties,
    which are its fields: passed through unchanged, so that the engine's validation names a
    wrong one, without the properties that have no value (the engine's defaults apply, they are
    not written again here). TLS material given inline (PEM text, e.g. from ``get_secret``) is
    written to private files first, so the configuration only ever holds paths."""
    config = {key: value for key, value in properties.items() if value is not None}
    config["name"] = provider_name(node_id, properties)
    tls = _tls_files(deployment_id, node_id, config.pop("tls", None) or {})
    if tls:
        config["tls"] = tls
    return cast(ProviderConfig, config)


def store_location(props: MutableMapping[str, Any], provider_node: str, config: ProviderConfig,
                   deployed: DeployedContainer | Mapping[str, Any], container_id: str | None = None) -> None:
    """Records where a container runs now (``properties.LOCATION``): the provider node, its
    name and configuration, the container's id (`container_id`, else the deployed one's),
    addresses, ports and public endpoints."""
    public = config.get("public_address")
    # Docker binds a published port on 0.0.0.0 and on ::; the public endpoint is the same.
    host_ports = sorted({p["host_port"] for p in deployed.get("ports", [])})
    props[rp.PROVIDER_NODE] = provider_node
    props[rp.PROVIDER] = config["name"]
    # The connection facts (never a secret: TLS material is referenced by path) travel with the
    # container, so that delete and migrate reach it wherever it runs now.
    props[rp.PROVIDER_CONFIG] = config
    props[rp.CONTAINER_ID] = container_id or deployed.get("id") or props.get(rp.CONTAINER_ID)
    props[rp.ADDRESSES] = deployed.get("addresses", {})
    props[rp.PORTS] = deployed.get("ports", [])
    props[rp.PUBLIC_ENDPOINTS] = [f"{public}:{port}" for port in host_ports] if public else []


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
