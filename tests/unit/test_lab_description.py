"""scripts/lab/lab-description.json, the one description of the provider lab: it is
self-consistent, blueprints/inputs/lab.yaml is what the generator derives from it, and the shell's
reader (common.sh with lab-description.jq) sees the same lab as the Python one. Reads files only:
no root, no running lab (the shell checks need bash and jq, which `make deps` installs)."""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dsl_parser import parser, tasks

ROOT = Path(__file__).resolve().parents[2]
LAB_SCRIPTS = ROOT / "scripts" / "lab"
WEBAPP = ROOT / "blueprints" / "webapp.yaml"


def _load_describe() -> Any:
    spec = importlib.util.spec_from_file_location("lab_describe", LAB_SCRIPTS / "describe.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


describe = _load_describe()


@pytest.fixture(scope="module")
def desc() -> dict[str, Any]:
    return json.loads(describe.DESCRIPTION.read_text())


def test_the_description_passes_its_own_check():
    describe.load()


@pytest.mark.parametrize(("path", "provider_b"), describe.INPUTS_FILES.items(), ids=lambda v: getattr(v, "name", v))
def test_inputs_are_what_the_generator_makes(desc: dict[str, Any], path, provider_b):
    want = describe.yaml_text(describe.inputs(desc, provider_b), provider_b)
    have = path.read_text()
    assert have == want, (
        f"{path.relative_to(ROOT)} differs from what lab-description.json gives: run "
        f"`python3 scripts/lab/describe.py write-inputs`"
    )


@pytest.mark.parametrize(("path", "provider_b"), describe.INPUTS_FILES.items(), ids=lambda v: getattr(v, "name", v))
def test_inputs_read_back_as_the_generated_values(desc: dict[str, Any], path, provider_b):
    """The hand-made YAML quoting reads back to exactly the values (an address stays a string)."""
    assert yaml.safe_load(path.read_text()) == describe.inputs(desc, provider_b)


def test_inputs_are_inputs_of_the_webapp_blueprint():
    """Cloudify refuses an input the blueprint does not declare."""
    declared = set(yaml.safe_load(WEBAPP.read_text())["inputs"])
    given = set(yaml.safe_load(describe.INPUTS.read_text()))
    assert given <= declared, f"lab.yaml gives inputs webapp.yaml does not declare: {sorted(given - declared)}"
    assert {"provider_a", "provider_b"} <= given


@pytest.mark.parametrize(("path", "provider_b"), describe.INPUTS_FILES.items(), ids=lambda v: getattr(v, "name", v))
def test_the_dsl_parser_deploys_webapp_with_them(desc: dict[str, Any], path, provider_b):
    """What `cfy init -i blueprints/inputs/lab.yaml` does first: Cloudify's own parser takes the
    inputs, and the providers' sockets reach the provider nodes."""
    plan = tasks.prepare_deployment_plan(parser.parse_from_path(str(WEBAPP)), inputs=yaml.safe_load(path.read_text()))
    nodes = {node["id"]: node for node in plan["nodes"]}
    by_name = {p["name"]: p for p in desc["providers"]}
    for node, name in (("provider_a", "provider-a"), ("provider_b", provider_b)):
        props = nodes[node]["properties"]
        assert props["docker_host"] == f"unix://{describe.docker_socket(desc, name)}"
        assert props["public_address"] == by_name[name]["public_address"]


# --- self-consistency, checked here on its own (a second opinion to describe.py's check) ----


def _host_subnet(desc: dict[str, Any]) -> ipaddress.IPv4Network:
    bridge = desc["host_bridge"]
    return ipaddress.IPv4Network(f"{bridge['address']}/{bridge['prefix_len']}", strict=False)


def test_addresses_are_inside_the_host_subnet_and_distinct(desc: dict[str, Any]):
    subnet = _host_subnet(desc)
    bridge = desc["host_bridge"]
    addresses = [bridge["address"], bridge["unused_address"]] + [p["public_address"] for p in desc["providers"]]
    for address in addresses:
        assert ipaddress.IPv4Address(address) in subnet, f"{address} is outside the host bridge's {subnet}"
    assert len(set(addresses)) == len(addresses), addresses


def test_networks_are_disjoint(desc: dict[str, Any]):
    networks = {"host bridge": _host_subnet(desc)}
    for p in desc["providers"]:
        networks[f"{p['name']} docker0"] = ipaddress.IPv4Network(p["bridge_subnet"])
        networks[f"{p['name']} pool"] = ipaddress.IPv4Network(p["address_pool"])
    for (name_a, a), (name_b, b) in itertools.combinations(networks.items(), 2):
        assert not a.overlaps(b), f"{name_a} {a} overlaps {name_b} {b}"


def test_each_bridge_ip_is_on_its_bridge_subnet(desc: dict[str, Any]):
    for p in desc["providers"]:
        assert ipaddress.IPv4Interface(p["bridge_ip"]).network == ipaddress.IPv4Network(p["bridge_subnet"]), p["name"]


def test_names_are_unique_and_interface_names_fit(desc: dict[str, Any]):
    providers = desc["providers"]
    for field in ("name", "netns", "veth"):
        values = [p[field] for p in providers]
        assert len(set(values)) == len(values), f"{field}s repeat: {values}"
    for name in [p["veth"] for p in providers] + [desc["host_bridge"]["name"]]:
        assert len(name) <= 15, f"{name} is longer than an interface name may be (15)"


def test_dns_listens_on_loopback_on_distinct_ports(desc: dict[str, Any]):
    dns = desc["dns"]
    assert ipaddress.IPv4Address(dns["listen_address"]).is_loopback
    ports = [dns["bind"]["port"], dns["powerdns"]["port"], dns["powerdns"]["api_port"]]
    assert len(set(ports)) == len(ports), ports


# --- bad descriptions: each error names the field -------------------------------------------


def _set(path: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[int(key)] if key.isdigit() else d[key]
        if value is _DELETE:
            del d[last]
        else:
            d[last] = value

    return change


_DELETE = object()

BAD = [
    ("providers.1.address_pool", "172.29.128.0/17"),
    ("providers.2.bridge_subnet", "172.31.1.0/24"),
    ("providers.0.veth", "veth-provider-aa"),
    ("providers.1.netns", "vmlab-a"),
    ("providers.0.public_address", "10.232.0.11"),
    ("providers.0.public_address", "10.231.0.1"),
    ("providers.0.bridge_ip", "172.31.9.1/24"),
    ("providers.0.public_adress", "10.231.0.11"),
    ("providers.0.address_pool_size", 12),
    ("providers.0.tls", "yes"),
    ("host_bridge.unused_address", "10.231.1.250"),
    ("host_bridge.name", "a-very-long-bridge"),
    ("dns.listen_address", "10.231.0.1"),
    ("dns.powerdns.port", 5300),
    ("dns.zone", "vi.test"),
    ("dns.bind.tsig_algorithm", "md5"),
    ("dns.ttl", _DELETE),
    ("state.run_dir", "run/vimigrate-lab"),
    ("images.web", "web"),
    ("guests.0.address", "10.231.0.12"),
    ("guests.0.address", "10.231.1.21"),
    ("guests.0.tap", "veth-vmlab-a"),
    ("guests.0.tap", "vmtap-guest-too-long"),
    ("guests.0.name", "provider-a"),
    ("guests.0.cpu", "max -enable-kvm"),
    ("guests.0.memory_mib", 64),
    ("guests.0.memory_mib", "2048"),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_a_wrong_field_is_named(desc: dict[str, Any], field: str, value: Any):
    bad = copy.deepcopy(desc)
    _set(field, value)(bad)
    with pytest.raises(describe.DescriptionError) as raised:
        describe.check(bad)
    assert f"`{field}`" in str(raised.value), str(raised.value)


# --- the shell's reader ---------------------------------------------------------------------


def _bash(script: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("jq"):
        pytest.fail("jq is missing: the lab scripts read the description with it; run `make deps`")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False)


def engine_path(desc: dict[str, Any], provider: dict[str, Any]) -> str:
    """dockerd's PATH for `provider` as common.sh gives it: its engine suite's binaries first."""
    path = provider.get("path", desc["dockerd_path"])
    if "engine_suite" in provider:
        return f"/opt/vimigrate-engines/{provider['engine_suite']}/bin:{path}"
    return path


def test_common_sh_sees_the_same_lab(desc: dict[str, Any]):
    """common.sh's variables and paths, as the scripts use them, are the description's (and the
    paths describe.py puts into lab.yaml are where common.sh puts the socket and the key)."""
    result = _bash(f"""set -euo pipefail
        source {LAB_SCRIPTS / "common.sh"}
        for p in "${{ALL_PROVIDERS[@]}}"; do
            printf '%s\\n' "$p" "${{P_NETNS[$p]}}" "${{P_VETH[$p]}}" "${{P_ADDR[$p]}}" "$(p_sock "$p")" "$(p_path "$p")"
        done
        printf '%s\\n' "${{#PROVIDERS[@]}}" "$HOST_BRIDGE" "$HOST_ADDR" "$DNS_PORT" "$DNS_ZONE" "$TSIG_KEY_FILE" \\
            "$PDNS_API_URL"
        """)
    assert result.returncode == 0, result.stderr
    want = []
    for p in desc["providers"]:
        want += [p["name"], p["netns"], p["veth"], p["public_address"], describe.docker_socket(desc, p["name"]),
                 engine_path(desc, p)]
    dns = desc["dns"]
    want += [str(sum(not p["on_demand"] for p in desc["providers"])), desc["host_bridge"]["name"],
             desc["host_bridge"]["address"], str(dns["bind"]["port"]), dns["zone"], describe.tsig_key_file(desc),
             f"http://{dns['listen_address']}:{dns['powerdns']['api_port']}"]
    assert result.stdout.splitlines() == want


@pytest.mark.parametrize(("field", "value", "message"), [
    ("providers.1.netns", 3, "`providers.1.netns` is 3, not a string"),
    ("dns.bind.port", _DELETE, "`dns.bind.port` is null, not a number"),
    ("providers.0.name", "a;b", "`providers.0.name` is \"a;b\": only a-z"),
])
def test_the_shell_reader_names_a_wrong_field(desc: dict[str, Any], tmp_path: Path, field: str, value: Any,
                                              message: str):
    bad = copy.deepcopy(desc)
    _set(field, value)(bad)
    path = tmp_path / "lab-description.json"
    path.write_text(json.dumps(bad))
    result = _bash(f"jq -r -f {LAB_SCRIPTS / 'lab-description.jq'} {path}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
