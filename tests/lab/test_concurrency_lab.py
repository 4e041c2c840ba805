"""Concurrent migrations on the lab: a second migration of a container that is moving is refused
with a clear message and changes nothing; independent containers move at the same time. (Two
`cfy` executions of migrate on one deployment: tests/cfy/test_concurrency_cfy.py.)"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from framework.engine import connect_both, container_ids, on_both
from framework.process import wait_for
from framework.workloads import consecutive, counted, run_busy_counter

import vimigrate


@pytest.fixture
def names(lab):
    made = [f"vmtest-conc-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    yield made
    on_both(lab, "rm", "-f", *made)


def test_a_second_migration_of_the_same_container_is_refused(lab, names):
    a, b = connect_both(lab)
    name = names[0]
    run_busy_counter(lab, name, mib=200)
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
    assert container_ids(lab, "provider-a", f"name=^/{name}$") == []
    on_b = counted(lab, "provider-b", name)
    assert consecutive(on_b), on_b


def test_independent_containers_migrate_at_the_same_time(lab, names):
    a, b = connect_both(lab)
    for name in names:
        run_busy_counter(lab, name, mib=50)
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
        seq = wait_for(lambda n=name: counted(lab, "provider-b", n), what=f"{name} on B")
        assert seq[0] >= 3 and consecutive(seq), seq
    # Together, not one after the other: their total stays under the sum of both.
    totals = [reports[n]["stats"]["total_ms"] / 1000 for n in names]
    assert elapsed < sum(totals), (elapsed, totals)
