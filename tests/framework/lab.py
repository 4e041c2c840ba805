"""The provider lab as the tests see it: a typed view of .lab/lab.json, which scripts/lab/up.sh
writes, and the only code that reads it. Every address, socket, path and image name a test uses
comes from here, so a lab laid out otherwise needs no test changed.

A part of the lab that is missing (no lab.json, a key a newer lab writes, a socket with no daemon
behind it) raises LabMissingError saying what is missing and how to get it; the `lab` fixture turns
that into a failure, never a skip. Keys this view does not know are ignored: lab.json may gain
more.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import subprocess
import threading
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .process import run

ROOT = Path(__file__).resolve().parents[2]
LAB_JSON = ROOT / ".lab" / "lab.json"
LAB_SCRIPTS = ROOT / "scripts" / "lab"
#: Written by scripts/lab/provider-nocriu.sh for the provider it starts on demand.
NOCRIU_JSON = ROOT / ".lab" / "provider-nocriu.json"

MAKE_LAB_UP = "run `make lab-up`"


class LabMissingError(Exception):
    """The lab, or a part of it a test needs, is not there; the message says what and how to
    get it."""


def _build(cls: type[Any], data: Any, where: str, source: Path) -> Any:
    """An instance of the dataclass `cls` from the mapping `data` found at `where` in
    `source`, its fields converted after their annotations; a missing key names its path."""
    if not isinstance(data, dict):
        raise LabMissingError(f"`{where}` in {source} is not a mapping: {data!r}; {MAKE_LAB_UP}")
    hints = typing.get_type_hints(cls)
    values = {}
    for spec in dataclasses.fields(cls):
        path = f"{where}.{spec.name}" if where else spec.name
        if spec.name not in data:
            if spec.default is not dataclasses.MISSING:
                continue
            raise LabMissingError(f"{source} has no `{path}`: the lab is older than these tests or not set up; "
                             f"{MAKE_LAB_UP}")
        values[spec.name] = _convert(hints[spec.name], data[spec.name], path, source)
    return cls(**values)


def _convert(hint: Any, value: Any, where: str, source: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin is types.UnionType:  # `X | None`
        [inner] = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return None if value is None else _convert(inner, value, where, source)
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise LabMissingError(f"`{where}` in {source} is not a mapping: {value!r}; {MAKE_LAB_UP}")
        return {key: _convert(item, inner, f"{where}.{key}", source) for key, inner in value.items()}
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, source)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise LabMissingError(f"`{where}` in {source} is {value!r}, not a {hint.__name__}; {MAKE_LAB_UP}")
    return value


@dataclass(frozen=True)
class Tls:
    """A provider's Docker API over TCP with TLS, and client material that must be refused."""

    docker_host: str
    ca: str
    cert: str
    key: str
    wrong_ca: str
    wrong_cert: str
    wrong_key: str

    def files(self, **overrides: str) -> dict[str, str]:
        """The engine's TLS files (ca, cert, key), with `overrides` (e.g. ca=self.wrong_ca)."""
        return {"ca": self.ca, "cert": self.cert, "key": self.key, **overrides}


@dataclass(frozen=True)
class Versions:
    """A provider's running stack, as its daemon reports it (and the CRIU on its PATH)."""

    engine: str
    api: str
    containerd: str
    runc: str
    criu: str
    kernel: str
    cgroup_version: str
    #: The Debian suite its engine comes from (`system`: the machine's own docker.io).
    suite: str
    #: Where its images and container layers live: `containerd` or the graph driver (`overlay2`).
    image_store: str = "overlay2"

    @property
    def engine_major(self) -> int:
        return int(self.engine.split(".")[0])


@dataclass(frozen=True)
class ProviderFacts:
    """One lab provider: a dockerd with CRIU in its own network namespace."""

    name: str
    docker_host: str
    public_address: str
    netns: str
    data_root: str
    bridge_subnet: str
    pid: int
    tls: Tls | None = None
    #: The host end of its veth, when lab.json names it (else found from its namespace).
    veth: str | None = None
    versions: Versions | None = None

    def require_versions(self) -> Versions:
        if self.versions is None:
            raise LabMissingError(f"{LAB_JSON} has no `providers.{self.name}.versions`: the lab predates the "
                                  f"engine matrix; {MAKE_LAB_UP}")
        return self.versions

    @property
    def socket(self) -> Path:
        return Path(self.docker_host.removeprefix("unix://"))

    @property
    def pidfile(self) -> Path:
        """The daemon's pidfile, next to its socket. lab.json's `pid` is what this checkout's
        lab-up saw; the daemon is host-wide and another checkout may have restarted it."""
        return self.socket.parent / "dockerd.pid"

    def dockerd_pid(self) -> int:
        return int(self.pidfile.read_text())

    def config(self, **fields: Any) -> dict[str, Any]:
        """The engine's provider configuration of this provider (its unix socket), with
        `fields` added or replaced."""
        return {"name": self.name, "docker_host": self.docker_host, "public_address": self.public_address, **fields}

    def tls_config(self, **fields: Any) -> dict[str, Any]:
        """The engine's configuration of this provider over TCP with TLS (the lab's client
        material unless `fields` gives other `tls`)."""
        tls = self.require_tls()
        return self.config(**{"docker_host": tls.docker_host, "tls": tls.files(), **fields})

    def require_tls(self) -> Tls:
        if self.tls is None:
            raise LabMissingError(f"{LAB_JSON} has no `providers.{self.name}.tls`: the lab predates TLS; {MAKE_LAB_UP}")
        return self.tls

    def blueprint_input(self) -> dict[str, str]:
        """What blueprints/webapp.yaml takes as this provider's input (provider_a, provider_b)."""
        return {"docker_host": self.docker_host, "public_address": self.public_address}

    def in_bridge_subnet(self, address: str) -> bool:
        """Whether `address` is on this provider's default bridge."""
        return ipaddress.ip_address(address) in ipaddress.ip_network(self.bridge_subnet)

    def host_link(self) -> str:
        """The host end of the veth that links this provider's namespace to the lab's bridge
        (its eth0's peer): taking it down cuts the provider off the others."""
        if self.veth:
            return self.veth
        inside = json.loads(run(["ip", "-n", self.netns, "-j", "link", "show", "eth0"], check=True).stdout)
        peer = inside[0]["link_index"]
        for link in json.loads(run(["ip", "-j", "link", "show"], check=True).stdout):
            if link["ifindex"] == peer:
                return str(link["ifname"])
        raise LabMissingError(f"no host end of {self.name}'s veth (ifindex {peer}); {MAKE_LAB_UP}")


@dataclass(frozen=True)
class PowerDns:
    """The lab's PowerDNS Authoritative server, changed through its HTTP API."""

    server: str
    port: int
    zone: str
    api_url: str
    server_id: str
    api_key_file: str
    pid: int

    @property
    def address(self) -> str:
        """HOST:PORT where it answers DNS queries."""
        return f"{self.server}:{self.port}"

    def api_key(self) -> str:
        return Path(self.api_key_file).read_text().strip()

    def engine_config(self) -> dict[str, Any]:
        """The DNS engine's configuration of this server (with its API key)."""
        return {"kind": "powerdns", "api_url": self.api_url, "server_id": self.server_id, "zone": self.zone,
                "api_key": self.api_key(), "dns_server": self.address, "timeout_secs": 5}

    def blueprint_server(self) -> dict[str, Any]:
        """webapp.yaml's `dns_server` input for this server (the key by file)."""
        return {"kind": "powerdns", "api_url": self.api_url, "server_id": self.server_id,
                "api_key_file": self.api_key_file, "dns_server": self.address}


@dataclass(frozen=True)
class Dns:
    """The lab's BIND9: the zone's authoritative server, updated by RFC 2136 with TSIG."""

    server: str
    port: int
    zone: str
    ttl: int
    tsig_key_name: str
    tsig_algorithm: str
    tsig_key_file: str
    pid: int
    powerdns: PowerDns | None = None

    @property
    def address(self) -> str:
        """HOST:PORT of the server."""
        return f"{self.server}:{self.port}"

    @property
    def pidfile(self) -> Path:
        """named's pidfile, next to its key (host-wide, as ProviderFacts.pidfile)."""
        return Path(self.tsig_key_file).parent / "named.pid"

    def named_pid(self) -> int:
        return int(self.pidfile.read_text())

    def tsig_secret(self) -> str:
        """The secret of the lab's TSIG key file (`secret "...";`)."""
        found = re.search(r'secret\s+"([^"]+)"', Path(self.tsig_key_file).read_text())
        if not found:
            raise LabMissingError(f"no `secret \"...\"` in the lab's TSIG key file {self.tsig_key_file}; {MAKE_LAB_UP}")
        return found[1]

    def engine_config(self) -> dict[str, Any]:
        """The DNS engine's configuration of this server (with the TSIG secret)."""
        return {"kind": "rfc2136", "server": self.address, "zone": self.zone, "tsig_key_name": self.tsig_key_name,
                "tsig_algorithm": self.tsig_algorithm, "tsig_secret": self.tsig_secret(), "timeout_secs": 5}

    def blueprint_server(self) -> dict[str, Any]:
        """webapp.yaml's `dns_server` input for this server (the secret by key file)."""
        return {"kind": "rfc2136", "server": self.address, "tsig_key_name": self.tsig_key_name,
                "tsig_key_file": self.tsig_key_file}

    def require_powerdns(self) -> PowerDns:
        if self.powerdns is None:
            raise LabMissingError(f"{LAB_JSON} has no `dns.powerdns` (api_url, server_id, zone, api_key_file, port): "
                             f"the lab has no PowerDNS server; {MAKE_LAB_UP}")
        return self.powerdns


@dataclass(frozen=True)
class Images:
    """The test images, on every provider."""

    counter: str
    redis: str
    web: str


@dataclass(frozen=True)
class Criu:
    path: str
    version: str


@dataclass(frozen=True)
class Lab:
    """The running lab, as .lab/lab.json describes it."""

    version: int
    host_address: str
    providers: dict[str, ProviderFacts]
    dns: Dns
    images: Images
    criu: Criu

    def provider(self, name: str) -> ProviderFacts:
        if name not in self.providers:
            raise LabMissingError(f"{LAB_JSON} has no provider `{name}` (it has {', '.join(self.providers)}); "
                                  f"{MAKE_LAB_UP}")
        return self.providers[name]

    @property
    def a(self) -> ProviderFacts:
        """provider-a, where the tests' workloads start."""
        return self.provider("provider-a")

    @property
    def b(self) -> ProviderFacts:
        """provider-b, where they move to."""
        return self.provider("provider-b")

    def unused_address(self) -> str:
        """An address on the lab's bridge where nothing listens (high in the host's /24; the
        providers sit low in it)."""
        network = ipaddress.ip_network(f"{self.host_address}/24", strict=False)
        return str(network.network_address + 250)

    @staticmethod
    def text() -> str:
        """lab.json as written, for the checks that it holds no secret."""
        return LAB_JSON.read_text()


def load() -> Lab:
    """The lab as lab.json describes it, without checking that it runs."""
    if not LAB_JSON.exists():
        raise LabMissingError(f"the provider lab is not set up: {LAB_JSON} is missing; {MAKE_LAB_UP}")
    return typing.cast(Lab, _build(Lab, json.loads(LAB_JSON.read_text()), "", LAB_JSON))


def running() -> Lab:
    """The lab, checked to be up: every provider's daemon socket is there."""
    lab = load()
    for name, provider in lab.providers.items():
        if not provider.socket.exists():
            raise LabMissingError(f"{name} is not running: no socket at {provider.socket}; {MAKE_LAB_UP}")
    return lab


#: One up.sh at a time from this process: a fault test starts one from a timer while its own
#: thread may start another, and two at once trip over each other's installs.
_UP = threading.Lock()


def up() -> None:
    """Starts whatever lab daemon a test stopped or killed (the lab's own idempotent start)."""
    with _UP:
        result = run(["bash", str(LAB_SCRIPTS / "up.sh")], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def status() -> subprocess.CompletedProcess[str]:
    """scripts/lab/status.sh: the lab's own view of its providers, DNS servers and images."""
    return run(["bash", str(LAB_SCRIPTS / "status.sh")])


@dataclass(frozen=True, kw_only=True)
class NocriuFacts(ProviderFacts):
    """provider-nocriu: a lab provider whose dockerd runs with a PATH that holds no criu, started
    on demand, with or without experimental mode."""

    experimental: bool
    #: The PATH its dockerd (and so runc) runs with.
    path: str


def nocriu_up(*flags: str) -> NocriuFacts:
    """Starts (or restarts with `flags`, e.g. --no-experimental) provider-nocriu; its facts."""
    script = LAB_SCRIPTS / "provider-nocriu.sh"
    result = run(["bash", str(script), "up", *flags], timeout=180)
    assert result.returncode == 0, f"provider-nocriu.sh up {' '.join(flags)}: {result.stdout}{result.stderr}"
    return typing.cast(NocriuFacts, _build(NocriuFacts, json.loads(NOCRIU_JSON.read_text()), "", NOCRIU_JSON))


def nocriu_down() -> None:
    result = run(["bash", str(LAB_SCRIPTS / "provider-nocriu.sh"), "down"], timeout=180)
    assert result.returncode == 0, f"provider-nocriu.sh down: {result.stdout}{result.stderr}"


#: Written by `scripts/lab/guest.sh up` for the qemu guest provider (its own kernel).
GUEST_JSON = ROOT / ".lab" / "provider-guest.json"
MAKE_TEST_GUEST = "run `make test-guest` (scripts/lab/guest.sh up boots it)"


@dataclass(frozen=True)
class GuestTls:
    """The lab client's material for the guest's TLS API."""

    ca: str
    cert: str
    key: str


@dataclass(frozen=True)
class GuestFacts:
    """provider-guest: a qemu guest with its own kernel, dockerd and CRIU, reached over TCP with
    TLS on the lab's bridge."""

    name: str
    docker_host: str
    public_address: str
    tls: GuestTls
    pid: int
    cpu: str
    kernel: str
    cgroup_version: str
    engine: str
    containerd: str
    runc: str
    criu: str

    def config(self, **fields: Any) -> dict[str, Any]:
        """The engine's configuration of the guest (TLS; a generous timeout: it is emulated)."""
        tls = {"ca": self.tls.ca, "cert": self.tls.cert, "key": self.tls.key}
        return {"name": self.name, "docker_host": self.docker_host, "public_address": self.public_address,
                "tls": tls, "timeout_secs": 180, **fields}


def guest() -> GuestFacts:
    """The running guest provider, as its facts file describes it."""
    if not GUEST_JSON.exists():
        raise LabMissingError(f"the guest provider is not running: {GUEST_JSON} is missing; {MAKE_TEST_GUEST}")
    facts = typing.cast(GuestFacts, _build(GuestFacts, json.loads(GUEST_JSON.read_text()), "", GUEST_JSON))
    if not Path(f"/proc/{facts.pid}").exists():
        raise LabMissingError(f"the guest's qemu (pid {facts.pid}) is not running; {MAKE_TEST_GUEST}")
    return facts
