"""Type stubs of the native engine module (Rust, pyo3)."""

from typing import Any, Callable

__version__: str

def version() -> str:
    """The engine's version, as built."""

def self_check() -> dict[str, Any]:
    """Facts about the native module: engine version, runtime readiness, build profile, target."""

class VimigrateError(Exception):
    """Base class of every vimigrate error."""

class InvalidInputError(VimigrateError):
    """An input field is wrong; nothing was changed."""
    field: str

class ProviderUnavailableError(VimigrateError):
    """A provider or service could not be reached or timed out; retrying may help."""

class NotFoundError(VimigrateError):
    """Something named does not exist."""

class ConflictError(VimigrateError):
    """A name or resource is already in use."""

class ProviderUnsuitableError(VimigrateError):
    """A provider lacks a capability vimigrate needs."""

class OperationFailedError(VimigrateError):
    """A provider refused or failed a request."""

class AccessDeniedError(VimigrateError):
    """The provider and vimigrate do not trust each other (TLS; DNS TSIG or API key); retrying cannot help."""

class MigrationFailedError(VimigrateError):
    """A migration failed; `rollback` says where the service runs now."""
    phase: str
    rollback: str  # nothing_to_undo | undone | resumed | held | failed
    retryable: bool
    kind: str

def migrate(
    source: Provider,
    destination: Provider,
    options: dict[str, Any],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Live-migrate one running container. options: container, keep_source, verify, check_criu,
    checkpoint_name. Returns the report with per-phase statistics (`stats`)."""

def heal(providers: list[Provider], name: str) -> dict[str, Any]:
    """Make container `name` run on exactly one of `providers` after a migration that did not
    finish (restored from its checkpoint when it runs nowhere) and remove what that migration
    left. Returns {container, runs_on, resumed, removed}; several running copies raise
    ProviderUnsuitableError naming them."""

class Provider:
    """A connection to one provider's Docker Engine."""

    @staticmethod
    def connect(config: dict[str, Any]) -> Provider:
        """Connect from a dict: name, docker_host, tls {ca, cert, key}, allow_plain_tcp,
        timeout_secs, public_address."""
    @staticmethod
    def from_env(name: str) -> Provider:
        """Connect following DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH."""
    @property
    def name(self) -> str: ...
    @property
    def api_version(self) -> str: ...
    def probe(self) -> dict[str, Any]:
        """Versions, platform and capabilities of the provider."""
    def deploy_container(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create (if needed) and start a container; returns id, addresses and ports."""
    def inspect_container(self, name: str) -> dict[str, Any] | None:
        """The container called `name`, or None."""
    def remove_container(self, name: str) -> bool:
        """Kill and remove a container vimigrate created; False if it was already gone."""
    def ensure_network(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a network unless it exists; returns its id, subnets and gateways."""
    def inspect_network(self, name: str) -> dict[str, Any] | None:
        """The network called `name` (id, name, subnets, gateways, managed), or None."""
    def rewrite_file(self, container: str, path: str, address_map: dict[str, str]) -> int:
        """Rewrite peer addresses (old -> new) in a file of a running container; returns the count."""
    def remove_network(self, name: str, only_if_unused: bool = False) -> bool:
        """Remove a network vimigrate created; False if it was already gone or, with
        only_if_unused, still in use."""

def dns_plan(
    server: dict[str, Any],
    desired: list[dict[str, Any]],
    delete: list[tuple[str, str]] | list[list[str]] | None = None,
) -> list[dict[str, Any]]:
    """The changes making the zone hold `desired` ({name, rtype, ttl, value}; name fully qualified
    with a trailing dot, rtype A | AAAA | CNAME) and none of `delete` ([name, rtype] pairs), read
    from the authoritative server by DNS. Each change: {name, rtype, before, after}, before/after
    being (value, ttl) or None. Empty when the zone already matches. server: {"kind": "rfc2136",
    server, zone, tsig_key_name, tsig_algorithm, tsig_secret, timeout_secs} or {"kind": "powerdns",
    api_url, server_id, zone, api_key, dns_server, timeout_secs}."""

def dns_apply(server: dict[str, Any], changes: list[dict[str, Any]]) -> None:
    """Apply the changes of `dns_plan` in one request (RFC 2136 UPDATE signed with TSIG, or one
    PowerDNS PATCH). Wrong credentials raise AccessDeniedError, an unreachable server
    ProviderUnavailableError, a refusal OperationFailedError."""

def dns_lookup(server: dict[str, Any], name: str, rtype: str) -> list[tuple[str, int]]:
    """The (value, ttl) pairs the authoritative server answers for `name` and `rtype`."""
