"""Concurrent migrations on the lab: a second migration of a container that is moving is refused
with a clear message and changes nothing; independent containers move at the same time; two
`cfy` executions of migrate on one deployment: the second is refused."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

import vimigrate
from conftest import ROOT, docker, numbers, run, wait_for
from test_cfy_local import _cfy, _webapp_inputs, cfy_env  # noqa: F401  (fixture)
from test_migrate_lab import connect

pytestmark = pytest.mark.lab


@pytest.fixture
def names(lab: dict):
    made = [f"vmtest-conc-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield made
    for provider in ("provider-a", "provider-b"):
        docker(lab, provider, "rm", "-f", *made, check=False)


def run_counting(lab: dict, name: str, mib: int = 0) -> None:
    image = lab["images"]["web"] if mib else lab["images"]["counter"]
    hold = f"MEM_MIB={mib} REDIS_ADDR=127.0.0.1:1 /usr/local/bin/vimigrate-labapp >/dev/null 2>&1 & " if mib else ""
    docker(lab, "provider-a", "run", "-d", "--name", name, "--runtime", "vimigrate", "--label",
           "io.vimigrate.managed=true", "--entrypoint", "/bin/sh", image, "-c",
           hold + "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done")
    wait_for(lambda: len(numbers(docker(lab, "provider-a", "logs", name))) >= 3, what="the counter")


def test_a_second_migration_of_the_same_container_is_refused(lab, names):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    name = names[0]
    run_counting(lab, name, mib=200)
    moving = threading.Event()
    outcome: dict = {}

    def first() -> None:
        try:
            outcome["report"] = vimigrate.migrate(
                a, b, {"container": name}, lambda e: moving.set() if e.get("phase") == "precopy" else None)
        except vimigrate.VimigrateError as err:
            outcome["error"] = err

    thread = threading.Thread(target=first)
    thread.start()
    assert moving.wait(60), "the first migration got going"
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate(a, b, {"container": name})
    thread.join(timeout=300)
    err = refused.value
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    assert err.kind == "Conflict" and "is being migrated already" in str(err) and "pid" in str(err), str(err)
    assert "error" not in outcome, outcome
    assert outcome["report"]["destination"] == "provider-b"
    assert docker(lab, "provider-a", "ps", "-aq", "--filter", f"name=^/{name}$").strip() == ""
    on_b = numbers(docker(lab, "provider-b", "logs", name))
    assert on_b and on_b == list(range(on_b[0], on_b[0] + len(on_b))), on_b


def test_independent_containers_migrate_at_the_same_time(lab, names):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    for name in names:
        run_counting(lab, name, mib=50)
    reports: dict = {}

    def move(name: str) -> None:
        try:
            reports[name] = vimigrate.migrate(a, b, {"container": name})
        except vimigrate.VimigrateError as err:
            reports[name] = err

    threads = [threading.Thread(target=move, args=(n,)) for n in names]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.monotonic() - started
    for name in names:
        report = reports[name]
        assert isinstance(report, dict), f"{name}: {report}"
        assert report["method"] == "direct" and report["destination"] == "provider-b"
        seq = wait_for(lambda n=name: numbers(docker(lab, "provider-b", "logs", n)), what=f"{name} on B")
        assert seq[0] >= 3 and seq == list(range(seq[0], seq[0] + len(seq))), seq
    # Together, not one after the other: their total stays under the sum of both.
    totals = [reports[n]["stats"]["total_ms"] / 1000 for n in names]
    assert elapsed < sum(totals), (elapsed, totals)


@pytest.mark.cfy
def test_a_second_cfy_migrate_of_a_deployment_is_refused(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"conc-{uuid.uuid4().hex[:6]}"
    port = 18170
    inputs = _webapp_inputs(lab, tmp_path, {"web_public_port": port, "redis_public_port": port + 300,
                                            "dns_name": blueprint_id, "dns_ttl": 2})
    _cfy(cfy, cfy_env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    try:
        _cfy(cfy, cfy_env, "executions", "start", "install", "-b", blueprint_id)
        migrate = [cfy, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_b",
                   "-p", "dns_wait_ttl=false"]
        results: list = []
        first = threading.Thread(target=lambda: results.append(run(migrate, env=cfy_env, timeout=600)))
        first.start()
        # The second starts while the first is moving Redis.
        wait_for(lambda: docker(lab, "provider-a", "ps", "-aq", "--filter",
                                f"name=^/vimigrate-lock-{blueprint_id}-redis$").strip(), timeout=60,
                 what="the first migration to hold Redis's lock")
        second = run(migrate, env=cfy_env, timeout=600)
        first.join(timeout=600)
        assert results[0].returncode == 0, results[0].stdout + results[0].stderr
        assert second.returncode != 0
        out = second.stdout + second.stderr
        assert "is being migrated already" in out, out
        instances = json.loads(_cfy(cfy, cfy_env, "node-instances", "-b", blueprint_id, "web"))
        assert instances[0]["runtime_properties"]["provider"] == "provider-b"
    finally:
        _cfy(cfy, cfy_env, "executions", "start", "uninstall", "-b", blueprint_id)
