"""Type stubs of the native engine module (Rust, pyo3).

Checked against the built module by tests/unit/test_native_stub.py: every name the module
exports is here with the same parameter names (pyo3 gives each function a __text_signature__),
nothing here is missing from the module, and the shapes in ``vimigrate.shapes`` have the
engine's field names (``shapes()``).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .shapes import (
    ContainerSpec,
    DeployedContainer,
    DescribedPlan,
    DnsRecord,
    GroupPlan,
    GroupReport,
    HealReport,
    MemberOutcome,
    MigrationOptions,
    MigrationReport,
    NetworkInfo,
    NetworkSpec,
    Phase,
    ProgressEvent,
    ProviderConfig,
    ProviderReport,
    RecordChange,
    RecordType,
    Rollback,
)

__version__: str

def version() -> str:
    """The engine's version, as built."""

def self_check() -> dict[str, Any]:
    """Facts about the native module: engine version, runtime readiness, build profile, target."""

def shapes() -> dict[str, list[str]]:
    """The engine's serialized shapes: type name -> sorted field names (for an enum, its
    variants as Python sees them)."""

class VimigrateError(Exception):
    """Base class of every vimigrate error."""

class InvalidInputError(VimigrateError):
    """An input field is wrong; `field` names it. Nothing was changed."""

    field: str

class ProviderUnavailableError(VimigrateError):
    """A provider or service could not be reached or timed out; retrying may help."""

class NotFoundError(VimigrateError):
    """Something named does not exist."""

class ConflictError(VimigrateError):
    """A name or resource is already in use."""

class ProviderUnsuitableError(VimigrateError):
    """A provider lacks a capability vimigrate needs (experimental mode, CRIU, ...)."""

class OperationFailedError(VimigrateError):
    """A provider refused or failed a request."""

class AccessDeniedError(VimigrateError):
    """The provider and vimigrate do not trust each other (TLS; DNS TSIG or API key); retrying cannot help."""

class MigrationFailedError(VimigrateError):
    """A migration failed: `phase` names the phase, `rollback` says where the service runs now,
    `retryable` whether trying again may succeed, `kind` the cause's error kind (InvalidInput,
    Unavailable, ...) and, when the cause is bad input, `field` the field."""

    phase: Phase
    rollback: Rollback
    retryable: bool
    kind: str
    field: str
    #: A group's failure (``migrate_group``): where each member runs now.
    members: list[MemberOutcome]

class Provider:
    """A connection to one provider's Docker Engine."""

    @staticmethod
    def connect(config: ProviderConfig | Mapping[str, Any]) -> Provider:
        """Connect from the engine's provider configuration (see ``vimigrate.shapes.ProviderConfig``)."""
    @staticmethod
    def from_env(name: str) -> Provider:
        """Connect following DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH."""
    @property
    def name(self) -> str:
        """The provider's name."""
    @property
    def api_version(self) -> str:
        """The negotiated Docker API version."""
    def probe(self) -> ProviderReport:
        """Versions, platform and capabilities of the provider."""
    def deploy_container(self, spec: ContainerSpec | Mapping[str, Any]) -> DeployedContainer:
        """Create (if needed) and start a container; returns id, addresses and ports."""
    def inspect_container(self, name: str) -> DeployedContainer | None:
        """The container called `name`, or None."""
    def remove_container(self, name: str) -> bool:
        """Kill and remove a container vimigrate created; False if it was already gone."""
    def ensure_network(self, spec: NetworkSpec | Mapping[str, Any]) -> NetworkInfo:
        """Create a network unless it exists; returns its id, subnets and gateways."""
    def inspect_network(self, name: str) -> NetworkInfo | None:
        """The network called `name`, or None."""
    def remove_network(self, name: str, only_if_unused: bool = False) -> bool:
        """Remove a network vimigrate created; False if it was already gone or, with
        only_if_unused, still in use."""
    def rewrite_file(self, container: str, path: str, address_map: Mapping[str, str]) -> int:
        """Rewrite peer addresses (old -> new) in a file of a running container; returns the count."""

def migrate(
    source: Provider,
    destination: Provider,
    options: MigrationOptions | Mapping[str, Any],
    progress: Callable[[ProgressEvent], object] | None = None,
) -> MigrationReport:
    """Live-migrate one running container. Returns the report with per-phase statistics
    (`stats`); raises MigrationFailedError naming the phase and the rollback."""

def plan_migration(
    source: Provider,
    destination: Provider,
    options: MigrationOptions | Mapping[str, Any],
) -> DescribedPlan:
    """What `migrate` would do with the same arguments, from the same preflight, changing
    nothing: the MigrationPlan, with its description in words under `lines`."""

def migrate_group(
    destination: Provider,
    members: Sequence[tuple[Provider, MigrationOptions | Mapping[str, Any]]],
    progress: Callable[[ProgressEvent], object] | None = None,
) -> GroupReport:
    """Live-migrate several containers under one freeze: prepared in parallel, frozen together,
    restored in parallel, released together; any failure undoes every member (MigrationFailedError
    with `members`)."""

def plan_group(
    destination: Provider,
    members: Sequence[tuple[Provider, MigrationOptions | Mapping[str, Any]]],
) -> GroupPlan:
    """What `migrate_group` would do with the same arguments, changing nothing: each member's plan
    with its `lines`, and the gate in words under `gate`."""

def heal(providers: Sequence[Provider], name: str, *, restart_from_image: bool = False) -> HealReport:
    """Make container `name` run on exactly one of `providers` after a migration that did not
    finish (restored from its checkpoint when it runs nowhere) and remove what that migration
    left. Several running copies raise ConflictError naming them; none, and no checkpoint to
    resume from (a post-copy's dumps hold no memory), NotFoundError saying its process state is
    lost. With `restart_from_image`, that case starts one copy afresh from its image instead
    (the post-copy's destination first): the process state is gone, the writable layer and
    volumes stay as they are; never while a copy runs or a checkpoint can resume it."""

def dns_plan(
    server: Mapping[str, Any],
    desired: Sequence[DnsRecord | Mapping[str, Any]],
    delete: Sequence[tuple[str, RecordType] | Sequence[str]] | None = None,
) -> list[RecordChange]:
    """The changes making the zone hold `desired` (names fully qualified with a trailing dot)
    and none of `delete` ([name, rtype] pairs), read from the authoritative server by DNS.
    Empty when the zone already matches. server: {"kind": "rfc2136", server, zone,
    tsig_key_name, tsig_algorithm, tsig_secret, timeout_secs} or {"kind": "powerdns", api_url,
    server_id, zone, api_key, dns_server, timeout_secs}."""

def dns_apply(server: Mapping[str, Any], changes: Sequence[RecordChange | Mapping[str, Any]]) -> None:
    """Apply the changes of `dns_plan` in one request (RFC 2136 UPDATE signed with TSIG, or one
    PowerDNS PATCH). Wrong credentials raise AccessDeniedError, an unreachable server
    ProviderUnavailableError, a refusal OperationFailedError."""

def dns_lookup(server: Mapping[str, Any], name: str, rtype: RecordType) -> list[tuple[str, int]]:
    """The (value, ttl) pairs the authoritative server answers for `name` and `rtype`."""
