"""The lab itself, as the demo and every end-to-end test rely on it: two experimental Docker
providers in their own namespaces with CRIU >= 4.2, the test images on both, a DNS server
that takes TSIG-signed dynamic updates, and a PowerDNS server changed through its HTTP API."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid

import pytest
from framework import lab as lab_view
from framework.engine import connect
from framework.lab import Lab, PowerDns
from framework.process import run


def _redis_ping(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=3) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64)


def test_lab_status_reports_everything_up():
    result = lab_view.status()
    assert result.returncode == 0, result.stdout + result.stderr


def test_criu_is_new_enough_and_usable(lab: Lab):
    version = run([lab.criu.path, "--version"])
    found = re.search(r"Version: (\d+)\.(\d+)", version.stdout)
    assert found and (int(found[1]), int(found[2])) >= (4, 2), version.stdout
    check = run([lab.criu.path, "check"])
    assert "Looks good" in check.stdout + check.stderr, check.stdout + check.stderr


@pytest.mark.parametrize("name", ["provider-a", "provider-b"])
def test_provider_has_the_images_and_experimental_mode(lab: Lab, name: str):
    report = connect(lab, name).probe()
    assert report["experimental"] is True
    assert report["api_version"] == "1.41"
    assert report["public_address"] == lab.provider(name).public_address


@pytest.mark.parametrize(("name", "port"), [("provider-a", 16401), ("provider-b", 16402)])
def test_each_provider_runs_redis_reachable_at_its_public_address(lab: Lab, name: str, port: int):
    provider = connect(lab, name)
    container = f"vmtest-py-redis-{name}"
    try:
        deployed = provider.deploy_container({
            "name": container, "image": lab.images.redis,
            "ports": [{"container_port": 6379, "host_port": port}],
        })
        assert deployed["running"] and deployed["ports"][0]["host_port"] == port
        address = lab.provider(name).public_address
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


def test_tsig_signed_update_changes_a_record_that_dig_returns(lab: Lab):
    dns = lab.dns
    a, b = lab.a.public_address, lab.b.public_address
    name = f"t-{uuid.uuid4().hex[:8]}.{dns.zone}"
    server = f"server {dns.server} {dns.port}\n"

    def nsupdate(body: str, key_file: str) -> object:
        return run(["nsupdate", "-k", key_file], input=f"{server}{body}send\n")

    def dig() -> str:
        return run(["dig", "+short", f"@{dns.server}", "-p", str(dns.port), name, "A"]).stdout.strip()

    added = nsupdate(f"update add {name} {dns.ttl} A {a}\n", dns.tsig_key_file)
    assert added.returncode == 0, added.stderr
    assert dig() == a
    changed = nsupdate(f"update delete {name} A\nupdate add {name} {dns.ttl} A {b}\n", dns.tsig_key_file)
    assert changed.returncode == 0, changed.stderr
    assert dig() == b
    removed = nsupdate(f"update delete {name} A\n", dns.tsig_key_file)
    assert removed.returncode == 0 and dig() == ""


def test_unsigned_update_is_refused(lab: Lab, tmp_path):
    dns = lab.dns
    name = f"t-{uuid.uuid4().hex[:8]}.{dns.zone}"
    update = f"server {dns.server} {dns.port}\nupdate add {name} 5 A {lab.a.public_address}\nsend\n"
    result = run(["nsupdate"], input=update)
    assert result.returncode != 0 and "REFUSED" in result.stdout + result.stderr
    answer = run(["dig", "+short", f"@{dns.server}", "-p", str(dns.port), name, "A"]).stdout.strip()
    assert answer == ""


def test_lab_json_holds_no_secret(lab: Lab):
    assert lab.dns.tsig_secret() not in lab.text()


def _pdns_api(pdns: PowerDns, method: str, path: str, key: str, body: dict | None = None) -> tuple[int, bytes]:
    """One call to the PowerDNS HTTP API (loopback); returns the status and the body."""
    request = urllib.request.Request(
        pdns.api_url + path, method=method, headers={"X-API-Key": key, "Content-Type": "application/json"},
        data=None if body is None else json.dumps(body).encode())
    # No proxy handler: the API is on loopback, whatever *_proxy the environment sets.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _pdns_dig(pdns: PowerDns, name: str, rtype: str) -> str:
    return run(["dig", "+short", f"@{pdns.server}", "-p", str(pdns.port), name, rtype]).stdout.strip()


def test_powerdns_answers_soa(lab: Lab):
    pdns = lab.dns.require_powerdns()
    soa = _pdns_dig(pdns, pdns.zone, "SOA").split()
    assert soa[:2] == [f"ns1.{pdns.zone}", f"hostmaster.{pdns.zone}"], soa
    assert soa[3:] == ["5", "5", "60", "5"], soa


def test_powerdns_api_patch_with_the_key_changes_a_record_that_dig_returns(lab: Lab):
    pdns = lab.dns.require_powerdns()
    key = pdns.api_key()
    a, b = lab.a.public_address, lab.b.public_address
    name = f"t-{uuid.uuid4().hex[:8]}.{pdns.zone}"
    zone_path = f"/api/v1/servers/{pdns.server_id}/zones/{pdns.zone}"

    def patch(changetype: str, address: str | None = None) -> int:
        records = [{"content": address, "disabled": False}] if address else []
        rrset = {"name": name, "type": "A", "ttl": 5, "changetype": changetype, "records": records}
        status, body = _pdns_api(pdns, "PATCH", zone_path, key, {"rrsets": [rrset]})
        assert status == 204, body
        return status

    try:
        patch("REPLACE", a)
        assert _pdns_dig(pdns, name, "A") == a
        patch("REPLACE", b)
        assert _pdns_dig(pdns, name, "A") == b
    finally:
        patch("DELETE")
    assert _pdns_dig(pdns, name, "A") == ""


def test_powerdns_api_refuses_a_wrong_key(lab: Lab):
    pdns = lab.dns.require_powerdns()
    name = f"t-{uuid.uuid4().hex[:8]}.{pdns.zone}"
    status, _ = _pdns_api(pdns, "GET", f"/api/v1/servers/{pdns.server_id}", "not-the-key")
    assert status == 401
    rrset = {"name": name, "type": "A", "ttl": 5, "changetype": "REPLACE",
             "records": [{"content": lab.a.public_address, "disabled": False}]}
    status, _ = _pdns_api(pdns, "PATCH", f"/api/v1/servers/{pdns.server_id}/zones/{pdns.zone}",
                          "not-the-key", {"rrsets": [rrset]})
    assert status == 401
    assert _pdns_dig(pdns, name, "A") == ""


def test_lab_json_holds_no_powerdns_api_key(lab: Lab):
    key = lab.dns.require_powerdns().api_key()
    assert key and key not in lab.text()
