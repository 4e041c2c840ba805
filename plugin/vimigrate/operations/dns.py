"""Operations of ``vimigrate.nodes.DnsRecord``: a public name that points at the provider where
its container runs. Created by install, deleted by uninstall, switched by migrate (with a lowered
TTL around the move) and by ``reconcile``. Secrets (TSIG secret, API key) are read here from
the node's properties (inputs or ``get_secret``) and key files, and never stored or logged."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from cloudify import ctx
from cloudify.decorators import operation
from cloudify.exceptions import NonRecoverableError, RecoverableError

from .. import _native
from .. import properties as rp
from ..shapes import DnsRecord, RecordChange
from ..tosca import NAMES_CONTAINER
from ._support import map_errors, targets

#: Verifying a switch: how long to wait for the authoritative server to answer the new value.
VERIFY_SECONDS = 10


def _bind_key_secret(path: str) -> str:
    """The secret of a BIND key file (`key "name" { algorithm ...; secret "..."; };`)."""
    found = re.search(r'secret\s+"([^"]+)"', Path(path).read_text())
    if not found:
        raise NonRecoverableError(f"invalid `server.tsig_key_file`: expected a BIND key file with a secret, got {path}")
    return found[1]


#: The engine's fields of each kind of server, passed through when given (the engine's defaults
#: apply to the others, and its validation names a wrong one).
ENGINE_FIELDS = {
    "rfc2136": ("server", "tsig_key_name", "tsig_algorithm", "tsig_secret", "timeout_secs"),
    "powerdns": ("api_url", "server_id", "api_key", "dns_server", "timeout_secs"),
}


def server_config(properties: dict[str, Any]) -> dict[str, Any]:
    """The engine's DNS server configuration from a record node's `server` property and zone;
    a secret given as a file (`tsig_key_file`, `api_key_file`) is read here."""
    server = dict(properties.get("server") or {})
    kind = server.get("kind", "rfc2136")
    if kind not in ENGINE_FIELDS:
        raise NonRecoverableError(f"invalid `server.kind`: expected rfc2136 or powerdns, got {kind!r}")
    config: dict[str, Any] = {"kind": kind, "zone": properties.get("zone", "")}
    config.update({key: server[key] for key in ENGINE_FIELDS[kind] if server.get(key) not in (None, "")})
    if kind == "rfc2136" and "tsig_secret" not in config and server.get("tsig_key_file"):
        config["tsig_secret"] = _bind_key_secret(server["tsig_key_file"])
    if kind == "powerdns" and "api_key" not in config and server.get("api_key_file"):
        config["api_key"] = Path(server["api_key_file"]).read_text().strip()
    return config


def _fqdn() -> str:
    name = ctx.node.properties["name"].rstrip(".")
    zone = ctx.node.properties["zone"].rstrip(".")
    return name + "." if name.endswith(zone) else f"{name}.{zone}."


def _target_address() -> str:
    container = next(iter(targets(ctx, NAMES_CONTAINER)), None)
    if container is None:
        raise NonRecoverableError(f"node `{ctx.node.id}` needs a relationship {NAMES_CONTAINER} to a container")
    config = container.instance.runtime_properties.get(rp.PROVIDER_CONFIG) or {}
    address = config.get("public_address")
    if not address:
        raise NonRecoverableError(f"the container of `{ctx.node.id}` runs on a provider without a public_address")
    return str(address)


def _set(address: str, ttl: int) -> list[RecordChange]:
    props = ctx.node.properties
    server = server_config(props)
    record = DnsRecord(name=_fqdn(), rtype=props["type"], ttl=ttl, value=address)
    changes = _native.dns_plan(server, [record])
    if changes:
        _native.dns_apply(server, changes)
    return changes


def _verify(address: str) -> None:
    server = server_config(ctx.node.properties)
    deadline = time.monotonic() + VERIFY_SECONDS
    seen: list[tuple[str, int]] = []
    while time.monotonic() < deadline:
        seen = _native.dns_lookup(server, _fqdn(), ctx.node.properties["type"])
        if [value for value, _ in seen] == [address]:
            return
        time.sleep(0.2)
    raise RecoverableError(f"{_fqdn()} answers {seen} at its authoritative server, not {address}")


def _record_state(address: str, ttl: int) -> None:
    props = ctx.instance.runtime_properties
    props[rp.FQDN] = _fqdn()
    props[rp.RECORD_TYPE] = ctx.node.properties["type"]
    props[rp.RECORD_VALUE] = address
    props[rp.RECORD_TTL] = ttl


@operation(resumable=True)
@map_errors
def create(**_: Any) -> None:
    """Points the record at the public address of the provider its container runs on."""
    address = _target_address()
    changes = _set(address, int(ctx.node.properties["ttl"]))
    _verify(address)
    _record_state(address, int(ctx.node.properties["ttl"]))
    ctx.logger.info("%s %s -> %s (%d change(s))", _fqdn(), ctx.node.properties["type"], address, len(changes))


@operation(resumable=True)
@map_errors
def delete(**_: Any) -> None:
    """Removes the record."""
    props = ctx.node.properties
    server = server_config(props)
    changes = _native.dns_plan(server, [], [[_fqdn(), props["type"]]])
    if changes:
        _native.dns_apply(server, changes)
    ctx.logger.info("%s removed", _fqdn())
    for key in rp.RECORD:
        ctx.instance.runtime_properties.pop(key, None)


@operation(resumable=True)
@map_errors
def switch(ttl: int | None = None, **_: Any) -> None:
    """Points the record at where its container runs now, with `ttl` (the node's own TTL when
    not given), and verifies the authoritative server answers it."""
    address = _target_address()
    ttl = int(ttl if ttl is not None else ctx.node.properties["ttl"])
    try:
        changes = _set(address, ttl)
        _verify(address)
    except _native.ProviderUnavailableError as err:
        previous = ctx.instance.runtime_properties.get(rp.RECORD_VALUE)
        raise RecoverableError(
            f"DNS server unreachable; {_fqdn()} still points at {previous}, the service runs at {address}: {err}"
        ) from None
    _record_state(address, ttl)
    ctx.logger.info("%s -> %s, TTL %d s (%d change(s))", _fqdn(), address, ttl, len(changes))
