"""The real Cloudify CLI in local mode against the lab: a blueprint whose operations call the
native engine, install and uninstall, with runtime properties read back from `cfy`."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import vimigrate
from conftest import ROOT, run

pytestmark = [pytest.mark.lab, pytest.mark.cfy]


@pytest.fixture
def cfy_env(tmp_path: Path) -> dict:
    """An isolated local Cloudify profile, and the venv's bin first on PATH."""
    env = dict(os.environ)
    env["CFY_WORKDIR"] = str(tmp_path / "cfy")
    env["PATH"] = f"{Path(os.sys.executable).parent}:{env['PATH']}"
    return env


def _cfy(cfy: str, env: dict, *args: str) -> str:
    result = run([cfy, *args], env=env, timeout=600)
    assert result.returncode == 0, f"cfy {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _instances(cfy: str, env: dict, blueprint_id: str, node: str) -> list[dict]:
    # In local mode `node-instances` logs the instances as JSON; its --json flag silences that log.
    return json.loads(_cfy(cfy, env, "node-instances", "-b", blueprint_id, node))


def test_install_stores_what_the_native_module_returned(lab: dict, cfy: str, cfy_env: dict):
    blueprint_id = f"check-{uuid.uuid4().hex[:6]}"
    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/provider-check.yaml"), "-b", blueprint_id)
    _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
    for node, name in (("provider_a", "provider-a"), ("provider_b", "provider-b")):
        [instance] = _instances(cfy, cfy_env, blueprint_id, node)
        props = instance["runtime_properties"]
        assert props["engine_version"] == vimigrate.version()
        assert props["provider"]["name"] == name
        assert props["provider"]["experimental"] is True
        assert props["provider"]["api_version"] == "1.41"
        assert name in props["provider"]["docker_root_dir"]


def _webapp_inputs(lab: dict, tmp_path: Path, extra: dict) -> Path:
    """An inputs file for blueprints/webapp.yaml on the lab's two providers, plus `extra`."""
    inputs = tmp_path / "inputs.json"
    providers = {f"provider_{p[-1]}": {k: lab["providers"][p][k] for k in ("docker_host", "public_address")}
                 for p in ("provider-a", "provider-b")}
    inputs.write_text(json.dumps({**providers, **extra}))
    return inputs


def _get(url: str) -> str:
    last: Exception | None = None
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.read().decode()
        except OSError as err:
            last = err
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered: {last}")


def test_webapp_installs_on_provider_a_answers_and_uninstalls_cleanly(lab: dict, cfy: str, cfy_env: dict,
                                                                      tmp_path: Path):
    blueprint_id = f"web-{uuid.uuid4().hex[:6]}"
    port = 18080
    inputs = _webapp_inputs(lab, tmp_path, {
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 2,
    })
    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    provider_a = vimigrate.Provider.connect({"name": "provider-a",
                                             "docker_host": lab["providers"]["provider-a"]["docker_host"]})
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        [web] = _instances(cfy, cfy_env, blueprint_id, "web")
        props = web["runtime_properties"]
        address = lab["providers"]["provider-a"]["public_address"]
        assert props["provider"] == "provider-a"
        assert props["container_name"] == f"{blueprint_id}-web"
        assert provider_a.inspect_container(f"{blueprint_id}-web")["running"] is True
        assert props["public_endpoints"] == [f"{address}:{port}"]
        first = _get(f"http://{address}:{port}/")
        second = _get(f"http://{address}:{port}/")
        count = lambda text: int(text.split("visits=")[1].split()[0])  # noqa: E731
        assert count(second) == count(first) + 1, (first, second)
    finally:
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)
    for name in (f"{blueprint_id}-web", f"{blueprint_id}-redis"):
        assert provider_a.inspect_container(name) is None, f"{name} left behind on provider-a"
    assert provider_a.inspect_network(f"{blueprint_id}-app_net") is None


def _dig(lab: dict, name: str) -> list[str]:
    """What the authoritative server answers for NAME.vi.test. A (clients follow this)."""
    dns = lab["dns"]
    out = run(["dig", "+short", f"@{dns['server']}", "-p", str(dns["port"]), f"{name}.{dns['zone']}", "A"]).stdout
    return out.split()


def _dig_ttl(lab: dict, name: str) -> int | None:
    dns = lab["dns"]
    out = run(["dig", "+noall", "+answer", f"@{dns['server']}", "-p", str(dns["port"]), f"{name}.{dns['zone']}",
               "A"]).stdout.split()
    return int(out[1]) if len(out) > 1 else None


def _cfy_fails(cfy: str, env: dict, *args: str) -> str:
    result = run([cfy, *args], env=env, timeout=600)
    assert result.returncode != 0, f"cfy {' '.join(args)} should have failed:\n{result.stdout}"
    return result.stdout + result.stderr


def test_migrate_there_and_back_keeps_the_visit_count(lab: dict, cfy: str, cfy_env: dict, tmp_path: Path):
    blueprint_id = f"mig-{uuid.uuid4().hex[:6]}"
    port = 18090
    inputs = _webapp_inputs(lab, tmp_path, {
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 2,
    })
    address = {p: lab["providers"][p]["public_address"] for p in ("provider-a", "provider-b")}
    connect = lambda p: vimigrate.Provider.connect({"name": p, "docker_host": lab["providers"][p]["docker_host"]})  # noqa: E731
    providers = {p: connect(p) for p in ("provider-a", "provider-b")}
    visits = lambda text: int(text.split("visits=")[1].split()[0])  # noqa: E731
    names = (f"{blueprint_id}-web", f"{blueprint_id}-redis")

    def where() -> dict:
        return {n: [p for p, prov in providers.items() if (prov.inspect_container(n) or {}).get("running")]
                for n in names}

    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        first = visits(_get(f"http://{address['provider-a']}:{port}/"))
        assert _dig(lab, blueprint_id) == [address["provider-a"]], "the public name points at provider-a"

        plan = _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id,
                    "-p", "target_provider=provider_b", "-p", "dry_run=true")
        assert "provider-a -> provider-b" in plan and "dry run: nothing was changed" in plan
        assert where() == {n: ["provider-a"] for n in names}

        for bad, field in ((["-p", "target_provider=provider_x"], "target_provider"),
                           (["-p", "target_provider=provider_b", "-p", "node_ids=[nope]"], "node_ids")):
            out = _cfy_fails(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id, *bad)
            assert f"invalid `{field}`" in out and "nothing was changed" in out, out
        assert where() == {n: ["provider-a"] for n in names}

        out = _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id,
                   "-p", "target_provider=provider_b")
        assert "phase checkpoint" in out and "now runs on provider-b" in out
        assert where() == {n: ["provider-b"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-b"]], "clients follow the service to provider-b"
        assert _dig_ttl(lab, blueprint_id) == 2, "the normal TTL is back after the move"
        on_b = visits(_get(f"http://{address['provider-b']}:{port}/"))
        assert on_b == first + 1, "the visit count lives on in the migrated Redis"
        [web] = _instances(cfy, cfy_env, blueprint_id, "web")
        assert web["runtime_properties"]["provider"] == "provider-b"
        assert web["runtime_properties"]["public_endpoints"] == [f"{address['provider-b']}:{port}"]

        _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_a")
        assert where() == {n: ["provider-a"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-a"]]
        assert visits(_get(f"http://{address['provider-a']}:{port}/")) == on_b + 1
    finally:
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)
    assert _dig(lab, blueprint_id) == [], "uninstall removed the record"
    for provider in providers.values():
        for name in names:
            assert provider.inspect_container(name) is None, f"{name} left on {provider.name}"
        assert provider.inspect_network(f"{blueprint_id}-app_net") is None, f"network left on {provider.name}"


def test_partial_migration_links_across_providers_then_internal_again(lab: dict, cfy: str, cfy_env: dict,
                                                                      tmp_path: Path):
    blueprint_id = f"part-{uuid.uuid4().hex[:6]}"
    port, redis_port = 18095, 18379
    inputs = _webapp_inputs(lab, tmp_path, {
        "web_public_port": port, "redis_public_port": redis_port, "dns_name": blueprint_id, "dns_ttl": 2,
    })
    a_addr, b_addr = (lab["providers"][p]["public_address"] for p in ("provider-a", "provider-b"))
    visits = lambda text: int(text.split("visits=")[1].split()[0])  # noqa: E731
    stats = lambda address: json.loads(_get(f"http://{address}:{port}/stats"))  # noqa: E731
    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        first = visits(_get(f"http://{a_addr}:{port}/"))

        plan = _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_b",
                    "-p", "node_ids=[web]", "-p", "dry_run=true")
        assert f"redis:6379 -> {a_addr}:{redis_port}" in plan, plan

        # Only the web server moves: it reaches Redis through provider-a's public address.
        _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_b",
             "-p", "node_ids=[web]")
        assert visits(_get(f"http://{b_addr}:{port}/")) == first + 1
        assert stats(b_addr)["redis_addr"] == f"{a_addr}:{redis_port}"

        # Redis follows: the link becomes internal again.
        _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_b",
             "-p", "node_ids=[redis]")
        deadline = time.monotonic() + 20
        while stats(b_addr)["redis_addr"] != "redis:6379" and time.monotonic() < deadline:
            _get(f"http://{b_addr}:{port}/")
            time.sleep(0.5)
        assert stats(b_addr)["redis_addr"] == "redis:6379"
        assert visits(_get(f"http://{b_addr}:{port}/")) > first + 1
    finally:
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)


def test_dns_server_down_during_migrate_leaves_the_service_on_b_and_reconcile_fixes_it(
        lab: dict, cfy: str, cfy_env: dict, tmp_path: Path):
    import os
    import signal
    import subprocess

    blueprint_id = f"dns-{uuid.uuid4().hex[:6]}"
    port = 18097
    inputs = _webapp_inputs(lab, tmp_path, {
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 4,
    })
    a_addr, b_addr = (lab["providers"][p]["public_address"] for p in ("provider-a", "provider-b"))
    named = int(open("/run/vimigrate-lab/dns/named.pid").read())
    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    stopped = False
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        migrate = subprocess.Popen([cfy, "executions", "start", "migrate", "-b", blueprint_id,
                                    "-p", "target_provider=provider_b"], env=cfy_env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        # The workflow lowers the TTL to 5 s, then waits out the old one (4 s): stop the DNS server
        # in that window, so the switch after the move finds it unreachable.
        deadline = time.monotonic() + 30
        while _dig_ttl(lab, blueprint_id) != 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(named, signal.SIGSTOP)
        stopped = True
        out, _ = migrate.communicate(timeout=300)
        assert migrate.returncode != 0, out
        assert "still points at" in out and "reconcile_dns" in out, out
        os.kill(named, signal.SIGCONT)
        stopped = False
        assert visits_at(b_addr, port) > 0, "the service runs on provider-b"
        assert _dig(lab, blueprint_id) == [a_addr], "the record still points at provider-a"
        _cfy(cfy, cfy_env, "executions", "start", "reconcile_dns", "-b", blueprint_id)
        assert _dig(lab, blueprint_id) == [b_addr]
    finally:
        if stopped:
            os.kill(named, signal.SIGCONT)
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)


def visits_at(address: str, port: int) -> int:
    return int(_get(f"http://{address}:{port}/").split("visits=")[1].split()[0])


def test_the_public_name_follows_through_powerdns(lab: dict, cfy: str, cfy_env: dict, tmp_path: Path):
    pdns = lab["dns"]["powerdns"]
    blueprint_id = f"pdns-{uuid.uuid4().hex[:6]}"
    port = 18099
    inputs = _webapp_inputs(lab, tmp_path, {
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 2,
        "dns_server": {"kind": "powerdns", "api_url": pdns["api_url"], "server_id": pdns["server_id"],
                       "api_key_file": pdns["api_key_file"], "dns_server": f"{pdns['server']}:{pdns['port']}"},
    })
    a_addr, b_addr = (lab["providers"][p]["public_address"] for p in ("provider-a", "provider-b"))

    def dig() -> list[str]:
        return run(["dig", "+short", f"@{pdns['server']}", "-p", str(pdns["port"]), f"{blueprint_id}.{pdns['zone']}",
                    "A"]).stdout.split()

    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        assert dig() == [a_addr]
        out = _cfy(cfy, cfy_env, "executions", "start", "migrate", "-b", blueprint_id,
                   "-p", "target_provider=provider_b", "-p", "dns_wait_ttl=false")
        assert dig() == [b_addr], out
        key = open(pdns["api_key_file"]).read().strip()
        assert key not in out, "the API key never appears in the execution's output"
    finally:
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)
    assert dig() == []
