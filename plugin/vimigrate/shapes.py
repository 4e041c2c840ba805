"""The engine's shapes as Python sees them: what goes into the native module (configurations,
specifications, options) and what comes back (reports), as TypedDicts whose keys are the engine's
own serialized field names, and its enums as the strings they serialize to.

Written by hand once and checked, not trusted: tests/unit/test_native_stub.py compares every
TypedDict and Literal here with ``_native.shapes()``, the field names the engine itself
serializes. A field the engine adds or renames fails that test until it is added or renamed here.

Inputs (``ProviderConfig``, ``MigrationOptions``, ...) mark the fields the engine defaults as
``NotRequired``: leave them out and the engine's default applies (defaults live only there).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# --- enums -------------------------------------------------------------------------------------

#: Where the service runs after a failed migration (``MigrationFailedError.rollback``).
Rollback = Literal["failed", "held", "lost", "nothing_to_undo", "resumed", "undone"]
#: How a migration moves the checkpoint.
Method = Literal["auto", "direct", "docker"]
#: How the memory moves: inside the freeze (stop-and-copy), pre-dumped while the service runs
#: (pre-copy), or after the restore (post-copy: a failure of the source or the link before every
#: page arrived loses what the service did since the restore); auto: pre-copy where the source
#: tracks dirty memory, else stop-and-copy.
MemoryMode = Literal["auto", "post-copy", "pre-copy", "stop-and-copy"]
#: Whether the direct path's stream is compressed: auto (where it pays), zstd (always), off.
Compression = Literal["auto", "off", "zstd"]
#: How the stream was compressed (plan, report).
StreamCompression = Literal["adaptive", "always", "off"]
#: What CRIU does with established TCP connections.
CriuTcp = Literal["auto", "close", "established", "host"]
#: The phases of a migration, in order (progress events, ``MigrationFailedError.phase``).
Phase = Literal["preflight", "image", "prepare", "precopy", "checkpoint", "transfer", "verify", "restore",
                "postcopy", "cleanup"]
#: Whether a network keeps its addresses on the destination.
AddressMode = Literal["preserve", "remap"]
#: The record types the DNS engine manages.
RecordType = Literal["A", "AAAA", "CNAME"]
#: Faults the project's own tests provoke (direct path only).
Fault = Literal["corrupt_stream", "fail_restore"]
#: A preflight host check, as ``ignore_host_checks`` names it.
HostCheckKind = Literal["cgroup", "cpu", "criu", "engine"]
#: Transport protocol of a published port.
Protocol = Literal["tcp", "udp"]

#: The Literal aliases above by the engine's type name, for the contract test.
ENUMS = {"Rollback": Rollback, "Method": Method, "MemoryMode": MemoryMode, "Compression": Compression,
         "StreamCompression": StreamCompression, "CriuTcp": CriuTcp, "Phase": Phase,
         "AddressMode": AddressMode, "RecordType": RecordType, "Fault": Fault, "Protocol": Protocol,
         "HostCheckKind": HostCheckKind}

# --- provider ----------------------------------------------------------------------------------


class TlsFiles(TypedDict):
    """Client TLS material for a Docker Engine over TCP, as paths of PEM files."""

    ca: str
    cert: str
    key: str


class ProviderConfig(TypedDict):
    """How to reach one provider (``Provider.connect``); also a container's runtime property
    ``provider_config``: paths only, never a secret."""

    name: str
    docker_host: str
    tls: NotRequired[TlsFiles | None]
    allow_plain_tcp: NotRequired[bool]
    timeout_secs: NotRequired[int]
    public_address: NotRequired[str | None]
    transfer_address: NotRequired[str | None]
    transfer_port: NotRequired[int]


class ProviderReport(TypedDict):
    """What ``Provider.probe`` found: versions, platform, capabilities."""

    name: str
    endpoint: str
    server_version: str
    api_version: str
    min_api_version: str
    os: str
    arch: str
    kernel_version: str
    experimental: bool
    docker_root_dir: str
    containers_running: int
    public_address: str | None
    runtimes: list[str]
    vimigrate_runtime: bool
    default_runtime: str
    containerd_version: str
    runc_version: str
    cgroup_version: str
    cgroup_driver: str
    image_store: str


# --- containers and networks -------------------------------------------------------------------


class PortSpec(TypedDict):
    """A container port to publish on the provider's public address."""

    container_port: int
    host_port: NotRequired[int | None]
    protocol: NotRequired[Protocol]


class NetworkAttachment(TypedDict):
    """A network a container joins, with the names it answers to there."""

    network: str
    aliases: NotRequired[list[str]]
    ipv4_address: NotRequired[str | None]


class VolumeSpec(TypedDict):
    """A named volume mounted into a container."""

    name: str
    destination: str
    read_only: NotRequired[bool]


class ContainerSpec(TypedDict):
    """Everything ``Provider.deploy_container`` needs to create and start one container."""

    name: str
    image: str
    command: NotRequired[list[str] | None]
    entrypoint: NotRequired[list[str] | None]
    env: NotRequired[dict[str, str]]
    hostname: NotRequired[str | None]
    labels: NotRequired[dict[str, str]]
    ports: NotRequired[list[PortSpec]]
    networks: NotRequired[list[NetworkAttachment]]
    volumes: NotRequired[list[VolumeSpec]]
    working_dir: NotRequired[str | None]
    user: NotRequired[str | None]


class PublishedPort(TypedDict):
    """A published port as the provider bound it."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int


class DeployedContainer(TypedDict):
    """A container as it runs on a provider (``deploy_container``, ``inspect_container``)."""

    id: str
    name: str
    provider: str
    addresses: dict[str, str]
    ports: list[PublishedPort]
    running: bool


class NetworkSpec(TypedDict):
    """A user-defined network as ``Provider.ensure_network`` takes it."""

    name: str
    subnet: NotRequired[str | None]
    gateway: NotRequired[str | None]
    labels: NotRequired[dict[str, str]]


class NetworkInfo(TypedDict):
    """A network as it exists on a provider."""

    id: str
    name: str
    subnets: list[str]
    gateways: list[str]
    managed: bool
    created_by_migration: bool


class NetworkDecision(TypedDict):
    """How one network maps to the destination of a migration."""

    name: str
    source_subnet: str | None
    mode: AddressMode
    reason: str
    create: NetworkSpec | None


# --- migration ---------------------------------------------------------------------------------


class MigrationOptions(TypedDict):
    """What to migrate and how (``migrate``, ``plan_migration``)."""

    container: str
    keep_source: NotRequired[bool]
    verify: NotRequired[bool]
    check_criu: NotRequired[bool]
    checkpoint_name: NotRequired[str | None]
    port_map: NotRequired[dict[str, int]]
    address_map: NotRequired[dict[str, str]]
    peer_files: NotRequired[list[str]]
    criu_tcp: NotRequired[CriuTcp]
    method: NotRequired[Method]
    memory: NotRequired[MemoryMode]
    compression: NotRequired[Compression]
    ignore_host_checks: NotRequired[list[HostCheckKind]]
    fault: NotRequired[Fault | None]


class DumpStats(TypedDict):
    """CRIU's own dump statistics (microseconds, page counts)."""

    freezing_time_us: int
    frozen_time_us: int
    memdump_time_us: int
    memwrite_time_us: int
    pages_scanned: int
    pages_skipped_parent: int
    pages_written: int
    irmap_resolve_us: int
    pages_lazy: int
    page_pipes: int
    page_pipe_bufs: int
    shpages_scanned: int
    shpages_skipped_parent: int
    shpages_written: int


class RestoreStats(TypedDict):
    """CRIU's own restore statistics (microseconds, page counts)."""

    pages_compared: int
    pages_skipped_cow: int
    forking_time_us: int
    restore_time_us: int
    pages_restored: int


class MigrationStats(TypedDict):
    """Time (ms) and volume (bytes) of each phase of a migration."""

    preflight_ms: int
    image_ms: int
    image_bytes: int
    prepare_ms: int
    precopy_ms: int
    precopy_bytes: int
    checkpoint_ms: int
    transfer_ms: int
    transfer_bytes: int
    checkpoint_bytes: int
    verify_ms: int
    restore_ms: int
    downtime_ms: int
    cleanup_ms: int
    total_ms: int
    criu_dump: DumpStats | None
    criu_restore: RestoreStats | None
    dump_ms: int
    receive_ms: int
    runtime_peak_rss_kib: int
    network_ms: int
    addresses_held: int
    postcopy_ms: int
    page_bytes: int
    wire_bytes: int
    compression_ratio: float
    predump_rounds: int
    predump_bytes: int
    predump_ms: int
    round_bytes: list[int]
    sockets_kept: int
    sockets_closed: int
    dump_started_unix_ms: int
    restored_unix_ms: int


class MigrationReport(TypedDict):
    """A successful migration (``migrate``)."""

    container: str
    source: str
    destination: str
    source_id: str
    destination_id: str
    checkpoint: str
    source_kept: bool
    stats: MigrationStats
    warnings: list[str]
    networks: list[NetworkDecision]
    address_changes: dict[str, str]
    criu_tcp_option: str | None
    rewrites: list[tuple[str, int]]
    method: Literal["direct", "docker"]
    memory: MemoryMode
    memory_reason: str
    compression: StreamCompression
    method_reason: str | None


class PreCopy(TypedDict):
    """The bounds of pre-copy's rounds (as P.Haul bounds its iterations)."""

    max_rounds: int
    enough_bytes: int
    shrink_percent: int


class Forwarding(TypedDict):
    """One published host port of a migrating container and where it lands."""

    protocol: str
    source_port: int
    destination_port: int


class DirectPath(TypedDict):
    """The checkpoint moves host to host through vimigrate-runtime."""

    method: Literal["direct"]
    destination_host: str


class DockerPath(TypedDict):
    """The checkpoint moves through Docker's checkpoint API, and why not directly."""

    method: Literal["docker"]
    reason: str


#: How a planned migration moves the checkpoint.
PlannedPath = DirectPath | DockerPath


class HostSummary(TypedDict):
    """One host of a migration as the preflight read it (``facts_known``: through its runtime)."""

    provider: str
    engine: str
    containerd: str
    runc: str
    kernel: str
    cgroup_version: str
    image_store: str
    criu: str | None
    cpu_model: str
    criu_features: dict[str, bool]
    facts_known: bool


class HostCheck(TypedDict):
    """One finding of the preflight's host comparison."""

    check: HostCheckKind | None
    provider: str
    outcome: Literal["refused", "overridden", "note"]
    detail: str


class HostComparison(TypedDict):
    """What differs between the two hosts, and what the host checks decided."""

    source: HostSummary
    destination: HostSummary
    checks: list[HostCheck]


class MigrationPlan(TypedDict):
    """What a migration will do, decided by its preflight before anything changes."""

    container: str
    source: str
    destination: str
    source_id: str
    checkpoint: str
    image: str
    image_on_destination: bool
    path: PlannedPath
    networks: list[NetworkDecision]
    forwarding: list[Forwarding]
    criu_tcp_option: str | None
    tcp_reason: str
    memory: MemoryMode
    memory_reason: str
    compression: StreamCompression
    compression_reason: str
    pre_copy: PreCopy | None
    destination_runtime: str | None
    address_map: dict[str, str]
    assigned_addresses: dict[str, str]
    rewrite_sockets: bool
    peer_files: list[str]
    criu_check: bool
    hosts: HostComparison


class DescribedPlan(MigrationPlan):
    """``plan_migration``'s answer: the plan, and the plan in words (what the dry run prints)."""

    lines: list[str]


class PhaseEvent(TypedDict):
    """Progress: a phase starts."""

    event: Literal["phase"]
    phase: Phase
    #: The member, in a group's events (``migrate_group``).
    container: NotRequired[str]


class BytesEvent(TypedDict):
    """Progress: bytes moved so far within a phase."""

    event: Literal["bytes"]
    phase: Phase
    bytes: int
    #: The member, in a group's events (``migrate_group``).
    container: NotRequired[str]


#: What the progress callback of ``migrate`` receives.
ProgressEvent = PhaseEvent | BytesEvent


class GroupStats(TypedDict):
    """A group's figures as a whole (``migrate_group``); each member's are in its report."""

    members: int
    preflight_ms: int
    prepare_ms: int
    freeze_spread_ms: float
    dump_spread_ms: int | None
    downtime_ms: int
    longest_member_downtime_ms: int
    cleanup_ms: int
    total_ms: int


class GroupReport(TypedDict):
    """A group that moved under one freeze (``migrate_group``)."""

    destination: str
    members: list[MigrationReport]
    stats: GroupStats
    address_changes: dict[str, str]


class GroupPlan(TypedDict):
    """What ``migrate_group`` would do (``plan_group``): each member's plan with its ``lines``,
    and the group's gate in words."""

    destination: str
    members: list[DescribedPlan]
    gate: list[str]


class MemberOutcome(TypedDict):
    """One member of a failed group: where it runs now (``MigrationFailedError.members``)."""

    container: str
    source: str
    rollback: Rollback
    failure: str | None


class HealReport(TypedDict):
    """What ``heal`` found and did."""

    container: str
    runs_on: str | None
    resumed: bool
    #: Started afresh from its image (``restart_from_image``): its process state was lost.
    restarted_from_image: bool
    removed: list[str]
    group: list[str]
    regrouped: list[str]


# --- DNS ---------------------------------------------------------------------------------------


class DnsRecord(TypedDict):
    """A record the caller wants to exist: exactly one value for its name and type."""

    name: str
    rtype: RecordType
    ttl: int
    value: str


class RecordChange(TypedDict):
    """One RRset to change (``dns_plan``): ``before`` and ``after`` are (value, ttl) or None."""

    name: str
    rtype: RecordType
    before: tuple[str, int] | None
    after: tuple[str, int] | None
