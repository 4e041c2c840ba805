"""The real Cloudify CLI in local mode against the lab: a blueprint whose operations call the
native engine, install and uninstall, with runtime properties read back from `cfy`; migrations
there and back, partial ones, and the public name following through BIND9 and PowerDNS."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

from framework.cfy import PROVIDER_CHECK, cfy_fails, instances, migrate_args, webapp
from framework.cfy import cfy as cfy_run
from framework.engine import BOTH, connect
from framework.process import run
from framework.workloads import visits, visits_at, web_get, web_stats

import vimigrate


def test_install_stores_what_the_native_module_returned(lab, cfy, cfy_env):
    blueprint_id = f"check-{uuid.uuid4().hex[:6]}"
    cfy_run(cfy, cfy_env, "init", str(PROVIDER_CHECK), "-b", blueprint_id,
            "-i", f"provider_a_docker_host={lab.a.docker_host}", "-i", f"provider_b_docker_host={lab.b.docker_host}")
    cfy_run(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
    for node, name in (("provider_a", "provider-a"), ("provider_b", "provider-b")):
        [instance] = instances(cfy, cfy_env, blueprint_id, node)
        props = instance["runtime_properties"]
        assert props["engine_version"] == vimigrate.version()
        assert props["provider"]["name"] == name
        assert props["provider"]["experimental"] is True
        assert props["provider"]["api_version"] == "1.41"
        assert name in props["provider"]["docker_root_dir"]


def test_webapp_installs_on_provider_a_answers_and_uninstalls_cleanly(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"web-{uuid.uuid4().hex[:6]}"
    port = 18080
    provider_a = connect(lab, "provider-a")
    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=2):
        [web] = instances(cfy, cfy_env, blueprint_id, "web")
        props = web["runtime_properties"]
        address = lab.a.public_address
        assert props["provider"] == "provider-a"
        assert props["container_name"] == f"{blueprint_id}-web"
        assert provider_a.inspect_container(f"{blueprint_id}-web")["running"] is True
        assert props["public_endpoints"] == [f"{address}:{port}"]
        first = web_get(address, port)
        second = web_get(address, port)
        assert visits(second) == visits(first) + 1, (first, second)
    for name in (f"{blueprint_id}-web", f"{blueprint_id}-redis"):
        assert provider_a.inspect_container(name) is None, f"{name} left behind on provider-a"
    assert provider_a.inspect_network(f"{blueprint_id}-app_net") is None


def _dig(lab, name: str) -> list[str]:
    """What the authoritative server answers for NAME.vi.test. A (clients follow this)."""
    dns = lab.dns
    return run(["dig", "+short", f"@{dns.server}", "-p", str(dns.port), f"{name}.{dns.zone}", "A"]).stdout.split()


def _dig_ttl(lab, name: str) -> int | None:
    dns = lab.dns
    out = run(["dig", "+noall", "+answer", f"@{dns.server}", "-p", str(dns.port), f"{name}.{dns.zone}",
               "A"]).stdout.split()
    return int(out[1]) if len(out) > 1 else None


def test_migrate_there_and_back_keeps_the_visit_count(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"mig-{uuid.uuid4().hex[:6]}"
    port = 18090
    address = {p: lab.provider(p).public_address for p in BOTH}
    providers = {p: connect(lab, p) for p in BOTH}
    names = (f"{blueprint_id}-web", f"{blueprint_id}-redis")

    def where() -> dict:
        return {n: [p for p, prov in providers.items() if (prov.inspect_container(n) or {}).get("running")]
                for n in names}

    def cfy_migrate(*params: str) -> str:
        return cfy_run(cfy, cfy_env, *migrate_args(blueprint_id, *params))

    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=2):
        first = visits_at(address["provider-a"], port)
        assert _dig(lab, blueprint_id) == [address["provider-a"]], "the public name points at provider-a"

        plan = cfy_migrate("target_provider=provider_b", "dry_run=true")
        assert "provider-a -> provider-b" in plan and "dry run: nothing was changed" in plan
        # The engine's own plan of each container, from the preflight the migration runs.
        for name in names:
            assert f"{name}: provider-a -> provider-b, checkpoint" in plan, plan
        assert "path: direct" in plan and f"network {blueprint_id}-app_net: addresses kept" in plan, plan
        assert f"forwarding {port}/tcp -> {port}/tcp on provider-b" in plan, plan
        assert "TCP connections: tcp-established" in plan, plan
        # A move the preflight would refuse is refused by the dry run, naming why.
        out = cfy_fails(cfy, cfy_env, *migrate_args(blueprint_id, "target_provider=provider_b", "dry_run=true",
                                                      f'{{"port_map": {{"{port}": 0}}}}'))
        assert "the migration would be refused" in out and f"port_map.{port}" in out, out
        assert where() == {n: ["provider-a"] for n in names}

        for bad, field in ((["target_provider=provider_x"], "target_provider"),
                           (["target_provider=provider_b", "node_ids=[nope]"], "node_ids")):
            out = cfy_fails(cfy, cfy_env, *migrate_args(blueprint_id, *bad))
            assert f"invalid `{field}`" in out and "nothing was changed" in out, out
        assert where() == {n: ["provider-a"] for n in names}

        out = cfy_migrate("target_provider=provider_b")
        # One group by default: both frozen together, the interruption the slower one's.
        assert "as one group" in out and "now run on provider-b: downtime" in out, out
        for name in names:
            assert f"{name}: phase checkpoint" in out and f"{name} moved from provider-a to provider-b" in out, out
        assert where() == {n: ["provider-b"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-b"]], "clients follow the service to provider-b"
        assert _dig_ttl(lab, blueprint_id) == 2, "the normal TTL is back after the move"
        on_b = visits_at(address["provider-b"], port)
        assert on_b == first + 1, "the visit count lives on in the migrated Redis"
        [web] = instances(cfy, cfy_env, blueprint_id, "web")
        assert web["runtime_properties"]["provider"] == "provider-b"
        assert web["runtime_properties"]["public_endpoints"] == [f"{address['provider-b']}:{port}"]

        # And one after another, as before groups.
        out = cfy_migrate("target_provider=provider_a", "order=sequential")
        assert "as one group" not in out and "phase checkpoint" in out and "now runs on provider-a" in out, out
        assert where() == {n: ["provider-a"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-a"]]
        assert visits_at(address["provider-a"], port) == on_b + 1
    assert _dig(lab, blueprint_id) == [], "uninstall removed the record"
    for provider in providers.values():
        for name in names:
            assert provider.inspect_container(name) is None, f"{name} left on {provider.name}"
        assert provider.inspect_network(f"{blueprint_id}-app_net") is None, f"network left on {provider.name}"


def test_partial_migration_links_across_providers_then_internal_again(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"part-{uuid.uuid4().hex[:6]}"
    port, redis_port = 18095, 18379
    a_addr, b_addr = lab.a.public_address, lab.b.public_address

    def cfy_migrate(*params: str) -> str:
        return cfy_run(cfy, cfy_env, *migrate_args(blueprint_id, *params))

    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=redis_port,
                dns_name=blueprint_id, dns_ttl=2):
        first = visits_at(a_addr, port)

        plan = cfy_migrate("target_provider=provider_b", "node_ids=[web]", "dry_run=true")
        assert f"redis:6379 -> {a_addr}:{redis_port}" in plan, plan

        # Only the web server moves: it reaches Redis through provider-a's public address.
        cfy_migrate("target_provider=provider_b", "node_ids=[web]")
        assert visits_at(b_addr, port) == first + 1
        assert web_stats(b_addr, port)["redis_addr"] == f"{a_addr}:{redis_port}"

        # Redis follows: the link becomes internal again.
        cfy_migrate("target_provider=provider_b", "node_ids=[redis]")
        deadline = time.monotonic() + 20
        while web_stats(b_addr, port)["redis_addr"] != "redis:6379" and time.monotonic() < deadline:
            web_get(b_addr, port)
            time.sleep(0.5)
        assert web_stats(b_addr, port)["redis_addr"] == "redis:6379"
        assert visits_at(b_addr, port) > first + 1


def test_dns_server_down_during_migrate_leaves_the_service_on_b_and_reconcile_fixes_it(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"dns-{uuid.uuid4().hex[:6]}"
    port = 18097
    a_addr, b_addr = lab.a.public_address, lab.b.public_address
    named = lab.dns.named_pid()
    stopped = False
    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=4):
        try:
            migrate = subprocess.Popen([cfy, *migrate_args(blueprint_id, "target_provider=provider_b")],
                                       env=cfy_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # The workflow lowers the TTL to 5 s, then waits out the old one (4 s): stop the DNS
            # server in that window, so the switch after the move finds it unreachable.
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
            cfy_run(cfy, cfy_env, "executions", "start", "reconcile_dns", "-b", blueprint_id)
            assert _dig(lab, blueprint_id) == [b_addr]
        finally:
            if stopped:
                os.kill(named, signal.SIGCONT)


def test_the_public_name_follows_through_powerdns(lab, cfy, cfy_env, tmp_path):
    pdns = lab.dns.require_powerdns()
    blueprint_id = f"pdns-{uuid.uuid4().hex[:6]}"
    port = 18099
    a_addr, b_addr = lab.a.public_address, lab.b.public_address

    def dig() -> list[str]:
        return run(["dig", "+short", f"@{pdns.server}", "-p", str(pdns.port), f"{blueprint_id}.{pdns.zone}",
                    "A"]).stdout.split()

    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=2, dns_server=pdns.blueprint_server()):
        assert dig() == [a_addr]
        out = cfy_run(cfy, cfy_env, *migrate_args(blueprint_id, "target_provider=provider_b", "dns_wait_ttl=false"))
        assert dig() == [b_addr], out
        assert pdns.api_key() not in out, "the API key never appears in the execution's output"
    assert dig() == []
