#!/usr/bin/env python3
"""The Python reader of lab-description.json, the one description of the provider lab.

    describe.py check     exits non-zero, naming each wrong field, unless the description is
                          well-formed and self-consistent (up.sh runs it before it changes
                          anything)
    describe.py inputs    prints blueprints/inputs/lab.yaml, the lab's inputs for
                          blueprints/webapp.yaml, derived from the description
                          (`inputs provider-28`: the same with that provider as provider_b)
    describe.py write-inputs  writes every inputs file of INPUTS_FILES

common.sh reads the same file with jq (lab-description.jq); the two agree on where a provider's
socket and the TSIG key live (tests/unit/test_lab_description.py checks it). Standard library
only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DESCRIPTION = HERE / "lab-description.json"
ROOT = HERE.parent.parent
INPUTS = ROOT / "blueprints" / "inputs" / "lab.yaml"
#: Each inputs file the generator writes, and the lab provider it gives as `provider_b` (the
#: webapp's second provider, where the demo moves to): lab.yaml the twin 20.10, lab-28.yaml the
#: Docker 28 engine (Docker's own restore broken there: the direct path's proof).
INPUTS_FILES = {INPUTS: "provider-b", ROOT / "blueprints" / "inputs" / "lab-28.yaml": "provider-28"}

#: Linux's IFNAMSIZ less the terminating NUL: `ip link add` refuses a longer name.
IFNAME_MAX = 15
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
#: What BIND's tsig-keygen makes and the engine's rfc2136 backend signs with.
TSIG_ALGORITHMS = {"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}

# The shape of the description: a dict of field -> type, or a nested shape; `[shape]` is a list
# of them. Optional fields are named in OPTIONAL. Unknown fields are errors (a misspelt one
# would otherwise be silently ignored and its default used).
SHAPE: dict[str, Any] = {
    "about": str,
    "version": int,
    "state": {"run_dir": str, "data_dir": str, "log_dir": str},
    "host_bridge": {"name": str, "address": str, "prefix_len": int, "unused_address": str},
    "dockerd_path": str,
    "providers": [{
        "name": str, "on_demand": bool, "netns": str, "veth": str, "public_address": str,
        "bridge_ip": str, "bridge_subnet": str, "address_pool": str, "address_pool_size": int,
        "tls": bool, "runtime": bool, "path": str, "engine_suite": str, "image_store": str,
    }],
    # Providers that are machines of their own (scripts/lab/guest.sh): a qemu guest booting a
    # Debian `suite`'s kernel, on a tap attached to the host bridge.
    "guests": [{"name": str, "address": str, "tap": str, "suite": str, "cpu": str, "memory_mib": int,
                "cgroup_version": int}],
    "tls": {"port": int, "server_dns_name": str},
    "dns": {
        "listen_address": str, "zone": str, "ttl": int,
        "bind": {"port": int, "tsig_key_name": str, "tsig_algorithm": str},
        "powerdns": {"port": int, "api_port": int, "server_id": str},
    },
    "images": {"counter": str, "redis": str, "web": str},
}
OPTIONAL = {"providers.*.path", "providers.*.engine_suite", "providers.*.image_store", "guests"}
#: A qemu -cpu model (with +flag/-flag options): no shell or qemu option syntax beyond that.
QEMU_CPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=,-]*$")
#: Guest RAM, MiB: the trixie guest with dockerd needs about 512; more than 64 GiB is a typo.
GUEST_MEMORY_MIB = (512, 65536)


class DescriptionError(Exception):
    """The description is wrong; the message lists every wrong field by its path."""


# --- where the lab keeps things: the layout common.sh uses ------------------------------------


def docker_socket(desc: dict[str, Any], provider: str) -> str:
    """The unix socket of `provider`'s dockerd (common.sh: p_sock)."""
    return f"{desc['state']['run_dir']}/{provider}/docker.sock"


def tsig_key_file(desc: dict[str, Any]) -> str:
    """named's TSIG key file (common.sh: TSIG_KEY_FILE)."""
    return f"{desc['state']['run_dir']}/dns/tsig.key"


# --- check --------------------------------------------------------------------------------------


def _shape_errors(value: Any, shape: Any, where: str) -> list[str]:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"`{where or '(top)'}` is {json.dumps(value)}, not an object"]
        errors = []
        for key, inner in shape.items():
            path = f"{where}.{key}" if where else key
            generic = re.sub(r"\.\d+\.", ".*.", path)
            if key not in value:
                if generic not in OPTIONAL:
                    errors.append(f"`{path}` is missing")
                continue
            errors += _shape_errors(value[key], inner, path)
        for key in value.keys() - shape.keys():
            path = f"{where}.{key}" if where else key
            errors.append(f"`{path}` is not a field of the lab description (known: {', '.join(shape)})")
        return errors
    if isinstance(shape, list):
        if not isinstance(value, list) or not value:
            return [f"`{where}` is {json.dumps(value)}, not a non-empty list"]
        return [e for i, item in enumerate(value) for e in _shape_errors(item, shape[0], f"{where}.{i}")]
    # bool is an int to Python: neither stands for the other here.
    if not isinstance(value, shape) or (shape is int and isinstance(value, bool)):
        return [f"`{where}` is {json.dumps(value)}, not a {shape.__name__}"]
    if shape is str and (not value or any(ord(c) < 32 for c in value)):
        return [f"`{where}` is {json.dumps(value)}: empty or with a control character"]
    return []


class _Checker:
    def __init__(self, desc: dict[str, Any]):
        self.desc = desc
        self.errors: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"`{where}` {message}")

    def name(self, where: str, value: str, max_len: int | None = None) -> None:
        if not NAME.match(value):
            self.fail(where, f"is {value!r}: only a-z, 0-9 and - (not first) are allowed")
        if max_len is not None and len(value) > max_len:
            self.fail(where, f"is {value!r}: {len(value)} characters, a network interface name has at most {max_len}")

    def address(self, where: str, value: str) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.fail(where, f"is {value!r}, not an IPv4 address")
            return None

    def network(self, where: str, value: str) -> ipaddress.IPv4Network | None:
        try:
            return ipaddress.IPv4Network(value)
        except ValueError as e:
            self.fail(where, f"is {value!r}, not an IPv4 network in CIDR form ({e})")
            return None

    def port(self, where: str, value: int) -> None:
        if not 1 <= value <= 65535:
            self.fail(where, f"is {value}, not a port (1-65535)")

    def unique(self, field: str, values: list[tuple[str, str]]) -> None:
        seen: dict[str, str] = {}
        for where, value in values:
            if value in seen:
                self.fail(where, f"is {value!r}, as `{seen[value]}` is: each provider needs its own {field}")
            seen.setdefault(value, where)

    def run(self) -> list[str]:
        d = self.desc
        if d["version"] != 1:
            self.fail("version", f"is {d['version']}: this describe.py reads version 1")
        for key in ("run_dir", "data_dir", "log_dir"):
            value = d["state"][key]
            if not re.match(r"^/[^ ]*[^/ ]$", value):
                self.fail(f"state.{key}", f"is {value!r}, not an absolute path without spaces or a trailing /")

        bridge = d["host_bridge"]
        self.name("host_bridge.name", bridge["name"], IFNAME_MAX)
        host = self.address("host_bridge.address", bridge["address"])
        subnet = None
        if not 8 <= bridge["prefix_len"] <= 30:
            self.fail("host_bridge.prefix_len", f"is {bridge['prefix_len']}, not between 8 and 30")
        elif host is not None:
            subnet = ipaddress.IPv4Network(f"{host}/{bridge['prefix_len']}", strict=False)
            if host in (subnet.network_address, subnet.broadcast_address):
                self.fail("host_bridge.address", f"is {host}, the network or broadcast address of {subnet}")
        # Addresses on the bridge, with the field that holds each, to find two that clash.
        on_bridge: list[tuple[str, str]] = [("host_bridge.address", bridge["address"])]
        unused = self.address("host_bridge.unused_address", bridge["unused_address"])
        if unused is not None and subnet is not None and unused not in subnet:
            self.fail("host_bridge.unused_address", f"is {unused}, outside the host bridge's {subnet}")
        on_bridge.append(("host_bridge.unused_address", bridge["unused_address"]))

        self.search_path("dockerd_path", d["dockerd_path"])
        providers = d["providers"]
        # Networks that must not overlap: the host's, each docker0, each pool.
        networks: list[tuple[str, ipaddress.IPv4Network]] = [("host_bridge", subnet)] if subnet else []
        for i, p in enumerate(providers):
            at = f"providers.{i}"
            self.name(f"{at}.name", p["name"])
            self.name(f"{at}.netns", p["netns"])
            self.name(f"{at}.veth", p["veth"], IFNAME_MAX)
            public = self.address(f"{at}.public_address", p["public_address"])
            if public is not None and subnet is not None and (
                    public not in subnet or public in (subnet.network_address, subnet.broadcast_address)):
                self.fail(f"{at}.public_address", f"is {public}, not a host address of the host bridge's {subnet}")
            on_bridge.append((f"{at}.public_address", p["public_address"]))
            docker0 = self.network(f"{at}.bridge_subnet", p["bridge_subnet"])
            try:
                bip = ipaddress.IPv4Interface(p["bridge_ip"])
            except ValueError:
                self.fail(f"{at}.bridge_ip", f"is {p['bridge_ip']!r}, not ADDRESS/PREFIX")
                bip = None
            if bip is not None and docker0 is not None:
                if bip.network != docker0:
                    self.fail(f"{at}.bridge_ip", f"is {bip}, which is not on `{at}.bridge_subnet` {docker0}")
                elif bip.ip in (docker0.network_address, docker0.broadcast_address):
                    self.fail(f"{at}.bridge_ip", f"is {bip}, the network or broadcast address of {docker0}")
            if docker0 is not None:
                networks.append((f"{at}.bridge_subnet", docker0))
            pool = self.network(f"{at}.address_pool", p["address_pool"])
            if pool is not None:
                networks.append((f"{at}.address_pool", pool))
                if not pool.prefixlen <= p["address_pool_size"] <= 30:
                    self.fail(f"{at}.address_pool_size",
                              f"is {p['address_pool_size']}: networks cut from {pool} take a prefix from "
                              f"{pool.prefixlen} to 30")
            if "path" in p:
                self.search_path(f"{at}.path", p["path"])
            if "image_store" in p:
                # Docker 20.10 (the system's engine) has no containerd image store; 24 on has.
                if p["image_store"] != "containerd":
                    self.fail(f"{at}.image_store", f"is {p['image_store']!r}, not `containerd` (absent: Docker's "
                                                   "graph drivers)")
                elif "engine_suite" not in p:
                    self.fail(f"{at}.image_store", "needs an `engine_suite`: the system's Docker 20.10 has no "
                                                   "containerd image store")
        guests = d.get("guests", [])
        for i, g in enumerate(guests):
            at = f"guests.{i}"
            self.name(f"{at}.name", g["name"])
            self.name(f"{at}.tap", g["tap"], IFNAME_MAX)
            self.name(f"{at}.suite", g["suite"])
            address = self.address(f"{at}.address", g["address"])
            if address is not None and subnet is not None and (
                    address not in subnet or address in (subnet.network_address, subnet.broadcast_address)):
                self.fail(f"{at}.address", f"is {address}, not a host address of the host bridge's {subnet}")
            on_bridge.append((f"{at}.address", g["address"]))
            if not QEMU_CPU.match(g["cpu"]):
                self.fail(f"{at}.cpu", f"is {g['cpu']!r}, not a qemu CPU model (letters, digits and _.+=,-)")
            if g["cgroup_version"] not in (1, 2):
                self.fail(f"{at}.cgroup_version", f"is {g['cgroup_version']}, not 1 or 2")
            low, high = GUEST_MEMORY_MIB
            if not low <= g["memory_mib"] <= high:
                self.fail(f"{at}.memory_mib", f"is {g['memory_mib']}, not between {low} and {high} MiB")
        # A guest is a provider too: its name also names its facts file (.lab/<name>.json).
        self.unique("name", [(f"providers.{i}.name", p["name"]) for i, p in enumerate(providers)]
                    + [(f"guests.{i}.name", g["name"]) for i, g in enumerate(guests)])
        self.unique("network namespace", [(f"providers.{i}.netns", p["netns"]) for i, p in enumerate(providers)])
        self.unique("veth", [(f"providers.{i}.veth", p["veth"]) for i, p in enumerate(providers)]
                    + [(f"guests.{i}.tap", g["tap"]) for i, g in enumerate(guests)]
                    + [("host_bridge.name", bridge["name"])])
        seen: dict[str, str] = {}
        for where, value in on_bridge:
            if value in seen:
                self.fail(where, f"is {value}, as `{seen[value]}` is: every address on the host bridge is distinct")
            seen.setdefault(value, where)
        for i, (where_a, a) in enumerate(networks):
            for where_b, b in networks[i + 1:]:
                if a.overlaps(b):
                    self.fail(where_b, f"{b} overlaps `{where_a}` {a}: routes and pools would be ambiguous")
        if all(p["on_demand"] for p in providers):
            self.fail("providers", "has only on_demand providers: up.sh would start none")

        self.port("tls.port", d["tls"]["port"])
        dns = d["dns"]
        listen = self.address("dns.listen_address", dns["listen_address"])
        if listen is not None and not listen.is_loopback:
            # The lab's servers answer this machine only.
            self.fail("dns.listen_address", f"is {listen}, not a loopback address")
        zone = dns["zone"]
        if not re.match(r"^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+$", zone):
            self.fail("dns.zone", f"is {zone!r}, not a lower-case absolute DNS name (with its final dot)")
        if not 1 <= dns["ttl"] <= 86400:
            self.fail("dns.ttl", f"is {dns['ttl']}, not 1 to 86400 seconds")
        ports = [("dns.bind.port", dns["bind"]["port"]), ("dns.powerdns.port", dns["powerdns"]["port"]),
                 ("dns.powerdns.api_port", dns["powerdns"]["api_port"])]
        for where, value in ports:
            self.port(where, value)
        seen_ports: dict[int, str] = {}
        for where, value in ports:
            if value in seen_ports:
                self.fail(where, f"is {value}, as `{seen_ports[value]}` is: each server needs its own port")
            seen_ports.setdefault(value, where)
        self.name("dns.bind.tsig_key_name", dns["bind"]["tsig_key_name"])
        if dns["bind"]["tsig_algorithm"] not in TSIG_ALGORITHMS:
            self.fail("dns.bind.tsig_algorithm",
                      f"is {dns['bind']['tsig_algorithm']!r}, not one of {', '.join(sorted(TSIG_ALGORITHMS))}")
        self.name("dns.powerdns.server_id", dns["powerdns"]["server_id"])
        for key, ref in d["images"].items():
            if not re.match(r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$", ref):
                self.fail(f"images.{key}", f"is {ref!r}, not a lower-case image reference with its tag")
        return self.errors

    def search_path(self, where: str, value: str) -> None:
        if not all(part.startswith("/") for part in value.split(":")):
            self.fail(where, f"is {value!r}, not a PATH of absolute directories")


def check(desc: Any) -> None:
    """Raises DescriptionError naming every wrong field of `desc`."""
    errors = _shape_errors(desc, SHAPE, "")
    if not errors:
        errors = _Checker(desc).run()
    if errors:
        raise DescriptionError("\n".join(errors))


def load(path: Path = DESCRIPTION) -> dict[str, Any]:
    """The description at `path`, checked."""
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DescriptionError(f"cannot read it: {e}") from e
    check(desc)
    return desc  # type: ignore[no-any-return]


# --- blueprints/inputs/lab.yaml ----------------------------------------------------------------

HEADER = """\
# Inputs of blueprints/webapp.yaml for the local lab that `make lab-up` starts. Generated from
# scripts/lab/lab-description.json by `python3 scripts/lab/describe.py inputs`: edit the
# description, then regenerate (tests/unit/test_lab_description.py fails while they differ).
"""


def header(provider_b: str) -> str:
    """The comment lab.yaml and its siblings start with."""
    if provider_b == "provider-b":
        return HEADER
    return HEADER + f"# provider_b is the lab's {provider_b}.\n"


def inputs(desc: dict[str, Any], provider_b: str = "provider-b") -> dict[str, Any]:
    """webapp.yaml's inputs for the lab: provider-a as `provider_a` and `provider_b` as
    `provider_b` (socket and public address), the images, and the zone's BIND9 server with its
    key file."""
    values: dict[str, Any] = {}
    by_name = {p["name"]: p for p in desc["providers"]}
    for slot, name in (("provider_a", "provider-a"), ("provider_b", provider_b)):
        values[slot] = {
            "docker_host": f"unix://{docker_socket(desc, name)}",
            "public_address": by_name[name]["public_address"],
        }
    dns = desc["dns"]
    values.update({
        "web_image": desc["images"]["web"],
        "redis_image": desc["images"]["redis"],
        "dns_zone": dns["zone"],
        "dns_ttl": dns["ttl"],
        "dns_server": {
            "kind": "rfc2136",
            "server": f"{dns['listen_address']}:{dns['bind']['port']}",
            "tsig_key_name": dns["bind"]["tsig_key_name"],
            "tsig_algorithm": dns["bind"]["tsig_algorithm"],
            "tsig_key_file": tsig_key_file(desc),
        },
    })
    return values


COMMENTS = {
    "web_image": "# The lab's own images (no registry is reachable), on every provider.",
    "dns_zone": ("# The web server's public name web.<zone> in the lab's BIND9, updated with its TSIG key file,\n"
                 "# with a short TTL so the demo's migrations wait little for resolvers."),
}


#: Characters a plain YAML scalar of lab.yaml may hold.
_PLAIN = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9_./:@-]*$")
#: Plain scalars YAML reads as something else (a number, a time, a boolean, null)...
_NOT_A_STRING = re.compile(r"^[0-9.:+-]+$|^(true|false|yes|no|on|off|null|~)$", re.IGNORECASE)
#: ... except an IPv4 address (with its port), which stays a string.
_ADDRESS = re.compile(r"^[0-9]+(\.[0-9]+){3}(:[0-9]+)?$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"no YAML for {value!r}")
    if isinstance(value, int):
        return str(value)
    if _PLAIN.match(value) and (_ADDRESS.match(value) or not _NOT_A_STRING.match(value)):
        return value
    # JSON's quoting is YAML's too.
    return json.dumps(value)


def yaml_text(values: dict[str, Any], provider_b: str = "provider-b") -> str:
    """`values` (strings, integers, one level of mappings) as the YAML text of lab.yaml (or of
    the sibling whose `provider_b` is that lab provider)."""
    lines = [header(provider_b).rstrip("\n")]
    for key, value in values.items():
        if key in COMMENTS:
            lines.append(COMMENTS[key])
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    usage = "usage: describe.py check | inputs [PROVIDER_B] | write-inputs"
    if not argv or argv[0] not in ("check", "inputs", "write-inputs") or len(argv) > (2 if argv[0] == "inputs" else 1):
        print(usage, file=sys.stderr)
        return 2
    try:
        desc = load()
    except DescriptionError as e:
        print(f"lab: error: {DESCRIPTION}:\n  " + str(e).replace("\n", "\n  "), file=sys.stderr)
        return 1
    if argv[0] == "inputs":
        provider_b = argv[1] if len(argv) > 1 else "provider-b"
        sys.stdout.write(yaml_text(inputs(desc, provider_b), provider_b))
    if argv[0] == "write-inputs":
        for path, provider_b in INPUTS_FILES.items():
            path.write_text(yaml_text(inputs(desc, provider_b), provider_b))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
