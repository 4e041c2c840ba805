"""The lab itself, as the demo and every end-to-end test rely on it: two experimental Docker
providers in their own namespaces with CRIU >= 4.2, the test images on both, and a DNS server
that takes TSIG-signed dynamic updates."""

from __future__ import annotations

import re
import socket
import time
import uuid

import pytest

import vimigrate
from conftest import ROOT, run

pytestmark = pytest.mark.lab


def _provider(lab: dict, name: str) -> vimigrate.Provider:
    facts = lab["providers"][name]
    return vimigrate.Provider.connect({"name": name, "docker_host": facts["docker_host"],
                                       "public_address": facts["public_address"], "timeout_secs": 60})


def _redis_ping(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=3) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64)


def test_lab_status_reports_everything_up():
    result = run(["bash", str(ROOT / "scripts/lab/status.sh")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_criu_is_new_enough_and_usable(lab: dict):
    version = run([lab["criu"]["path"], "--version"])
    found = re.search(r"Version: (\d+)\.(\d+)", version.stdout)
    assert found and (int(found[1]), int(found[2])) >= (4, 2), version.stdout
    check = run([lab["criu"]["path"], "check"])
    assert "Looks good" in check.stdout + check.stderr, check.stdout + check.stderr


@pytest.mark.parametrize("name", ["provider-a", "provider-b"])
def test_provider_has_the_images_and_experimental_mode(lab: dict, name: str):
    report = _provider(lab, name).probe()
    assert report["experimental"] is True
    assert report["api_version"] == "1.41"
    assert report["public_address"] == lab["providers"][name]["public_address"]


@pytest.mark.parametrize(("name", "port"), [("provider-a", 16401), ("provider-b", 16402)])
def test_each_provider_runs_redis_reachable_at_its_public_address(lab: dict, name: str, port: int):
    provider = _provider(lab, name)
    container = f"vmtest-py-redis-{name}"
    try:
        deployed = provider.deploy_container({
            "name": container, "image": lab["images"]["redis"],
            "ports": [{"container_port": 6379, "host_port": port}],
        })
        assert deployed["running"] and deployed["ports"][0]["host_port"] == port
        address = lab["providers"][name]["public_address"]
        answer = b""
        for _ in range(30):
            try:
                answer = _redis_ping(address, port)
                break
            except OSError:
                time.sleep(0.2)
        assert answer == b"+PONG\r\n", f"redis on {name} at {address}:{port} answered {answer!r}"
    finally:
        provider.remove_container(container)
    assert provider.inspect_container(container) is None


def test_tsig_signed_update_changes_a_record_that_dig_returns(lab: dict):
    dns = lab["dns"]
    name = f"t-{uuid.uuid4().hex[:8]}.{dns['zone']}"
    server = f"server {dns['server']} {dns['port']}\n"

    def nsupdate(body: str, key_file: str) -> object:
        return run(["nsupdate", "-k", key_file], input=f"{server}{body}send\n")

    def dig() -> str:
        return run(["dig", "+short", f"@{dns['server']}", "-p", str(dns["port"]), name, "A"]).stdout.strip()

    added = nsupdate(f"update add {name} {dns['ttl']} A 10.231.0.11\n", dns["tsig_key_file"])
    assert added.returncode == 0, added.stderr
    assert dig() == "10.231.0.11"
    changed = nsupdate(f"update delete {name} A\nupdate add {name} {dns['ttl']} A 10.231.0.12\n",
                       dns["tsig_key_file"])
    assert changed.returncode == 0, changed.stderr
    assert dig() == "10.231.0.12"
    removed = nsupdate(f"update delete {name} A\n", dns["tsig_key_file"])
    assert removed.returncode == 0 and dig() == ""


def test_unsigned_update_is_refused(lab: dict, tmp_path):
    dns = lab["dns"]
    name = f"t-{uuid.uuid4().hex[:8]}.{dns['zone']}"
    result = run(["nsupdate"], input=f"server {dns['server']} {dns['port']}\nupdate add {name} 5 A 10.231.0.11\nsend\n")
    assert result.returncode != 0 and "REFUSED" in result.stdout + result.stderr
    answer = run(["dig", "+short", f"@{dns['server']}", "-p", str(dns["port"]), name, "A"]).stdout.strip()
    assert answer == ""


def test_lab_json_holds_no_secret(lab: dict):
    key_text = open(lab["dns"]["tsig_key_file"]).read()
    secret = re.search(r'secret\s+"([^"]+)"', key_text)[1]
    assert secret not in (ROOT / ".lab" / "lab.json").read_text()
