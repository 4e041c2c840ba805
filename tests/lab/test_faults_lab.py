"""Faults during a live migration on the lab's real providers, one per phase: a daemon killed or
restarted, the link between the providers cut, the destination's disk full, the broker killed.
After each, the service runs on exactly one provider with its state intact (the counter goes on
from where it was, without restarting or skipping), and the error names the phase. Each fault is
run towards provider-b (Docker 20.10) and towards provider-28 (Docker 28.5, where Docker's own
restore is broken and the rollback's resume is the only way back). (The heal workflow after a
dead broker, through `cfy`: tests/cfy/test_heal_cfy.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from framework import lab as lab_view
from framework.engine import (
    checkpoints,
    connect,
    container_ids,
    docker,
    heal,
    helpers,
    kill_cli_migrate_at,
    root_dir,
    running_on,
    start_cli_migrate,
)
from framework.process import wait_for
from framework.workloads import consecutive, counted, run_busy_counter

import vimigrate


@pytest.fixture(params=["provider-b", "provider-28"])
def destination(request) -> str:
    """Where the container moves from provider-a: an engine like the source's, or Docker 28."""
    return str(request.param)


@pytest.fixture
def pair(destination) -> tuple[str, str]:
    return ("provider-a", destination)


@pytest.fixture
def name(lab, pair):
    container = f"vmtest-fault-{uuid.uuid4().hex[:8]}"
    yield container
    lab_view.up()
    for provider in pair:
        docker(lab, provider, "rm", "-f", container, f"vimigrate-lock-{container}", check=False)
        leftovers = helpers(lab, provider, container, check=False)
        if leftovers:
            docker(lab, provider, "rm", "-f", *leftovers, check=False)


def assert_runs_once_intact(lab, name: str, pair: tuple[str, str]) -> str:
    """The container runs on exactly one provider of `pair` (source, destination), counting on
    from its frozen state (restored, not restarted: no number repeats or is skipped), and nothing
    of the migration is left on either provider. Returns where it runs."""
    running = wait_for(lambda: running_on(lab, name, pair), timeout=30, what=f"{name} to run somewhere")
    assert len(running) == 1, f"{name} runs on {running}"
    provider = running[0]
    before = counted(lab, provider, name)
    time.sleep(1.5)
    seq = counted(lab, provider, name)
    assert len(seq) > len(before), f"{name} on {provider} does not count any more"
    assert consecutive(seq), f"restarted or lost numbers on {provider}: {seq}"
    # The source's own log starts at 0; a copy restored elsewhere goes on from where it was.
    assert seq[0] == 0 if provider == pair[0] else seq[0] >= 3, seq[:5]
    for p in pair:
        assert helpers(lab, p, name) == [], f"helpers left on {p}"
        assert container_ids(lab, p, f"name=^/vimigrate-lock-{name}$") == [], f"lock left on {p}"
        if p != provider:
            assert container_ids(lab, p, f"name=^/{name}$") == [], f"a copy left on {p}"
    assert checkpoints(lab, provider, name) == [], "checkpoint left"
    return provider


def at_phase(phase: str, action, delay: float = 0.0):
    """A progress callback that runs `action` once, `delay` s after `phase` starts (in a thread
    when delayed, so that the migration goes on meanwhile)."""
    fired = []

    def on_event(event: dict) -> None:
        if event["event"] == "phase" and event["phase"] == phase and not fired:
            fired.append(time.monotonic())
            if delay:
                threading.Timer(delay, action).start()
            else:
                action()

    on_event.fired = fired
    return on_event


def test_destination_daemon_killed_during_the_transfer(lab, name, pair, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination, timeout=20)
    run_busy_counter(lab, name, mib=300)
    killed = []

    def kill_b() -> None:
        os.kill(lab.provider(destination).dockerd_pid(), signal.SIGKILL)
        killed.append(time.monotonic())
        # The daemon comes back while the rollback waits for it.
        threading.Timer(2.0, lab_view.up).start()

    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name}, at_phase("checkpoint", kill_b, delay=0.3))
    err = caught.value
    print(f"observed: phase={err.phase} rollback={err.rollback} retryable={err.retryable}: {err}")
    assert killed and err.phase in ("checkpoint", "transfer", "restore"), str(err)
    assert err.rollback in ("resumed", "held"), str(err)
    lab_view.up()
    report = heal(lab, name, pair)
    print(f"observed: heal: {report}")
    assert report["runs_on"] in pair, report
    assert_runs_once_intact(lab, name, pair)


def test_destination_daemon_killed_during_the_restore(lab, name, pair, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination, timeout=20)
    run_busy_counter(lab, name, mib=100)

    def kill_b() -> None:
        os.kill(lab.provider(destination).dockerd_pid(), signal.SIGKILL)
        threading.Timer(2.0, lab_view.up).start()

    # On the direct path the transfer phase starts once the source's dump is through and the
    # destination confirmed every digest: the destination is restoring then.
    try:
        report = vimigrate.migrate(a, b, {"container": name}, at_phase("transfer", kill_b))
        outcome = f"succeeded ({report['destination']})"
    except vimigrate.MigrationFailedError as err:
        assert err.phase in ("transfer", "restore"), str(err)
        assert err.rollback in ("resumed", "held"), str(err)
        outcome = err.rollback
    lab_view.up()
    healed = heal(lab, name, pair)
    where = assert_runs_once_intact(lab, name, pair)
    print(f"observed: {outcome}; heal: {healed}")
    assert healed["runs_on"] == where, (outcome, healed)


def test_source_daemon_restarted_after_the_checkpoint(lab, name, pair, destination):
    a, b = connect(lab, "provider-a", timeout=20), connect(lab, destination)
    run_busy_counter(lab, name, mib=50)

    def restart_a() -> None:
        pid = lab.a.dockerd_pid()
        os.kill(pid, signal.SIGTERM)
        # Down until it exited; the destination restores meanwhile (its start is in flight).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, what="provider-a's dockerd to stop")

    report = vimigrate.migrate(a, b, {"container": name}, at_phase("transfer", restart_a))
    # The container runs on B: what the source's restart kept from the cleanup is reported.
    assert report["destination"] == destination
    print(f"observed: succeeded with warnings {report.get('warnings')}")
    lab_view.up()
    print(f"observed: heal: {heal(lab, name, pair)}")
    assert assert_runs_once_intact(lab, name, pair) == destination


def test_link_between_the_providers_cut_mid_transfer(lab, name, pair, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination, timeout=20)
    run_busy_counter(lab, name, mib=300)
    link = lab.provider(destination).host_link()
    down = []

    def cut() -> None:
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        down.append(True)

    try:
        with pytest.raises(vimigrate.MigrationFailedError) as caught:
            vimigrate.migrate(a, b, {"container": name}, at_phase("checkpoint", cut, delay=0.2))
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    err = caught.value
    print(f"observed: phase={err.phase} rollback={err.rollback} retryable={err.retryable}: {err}")
    assert down and err.phase == "transfer" and err.rollback == "resumed", str(err)
    assert err.retryable is True, str(err)
    assert assert_runs_once_intact(lab, name, pair) == "provider-a"


def test_destination_disk_full(lab, name, pair, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination)
    run_busy_counter(lab, name, mib=64)
    root_b = root_dir(lab, destination)
    mounted = []

    def fill() -> None:
        # A small filesystem where the destination's images go (its checkpoints directory).
        full_id = docker(lab, destination, "ps", "-a", "--no-trunc", "-q", "--filter", f"name=^/{name}$").strip()
        target = root_b / "containers" / full_id / "checkpoints"
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(target)], check=True)
        mounted.append(target)
        status = target.parent / "vimigrate/status.json"

        def unmount_once_failed() -> None:
            # Docker cannot remove a container with a mount in its directory: the full disk
            # goes as soon as the destination gave up, as an operator would free it.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and '"failed"' not in (status.read_text() if status.exists() else ""):
                time.sleep(0.02)
            subprocess.run(["umount", "-l", str(target)], check=False)

        threading.Thread(target=unmount_once_failed, daemon=True).start()

    try:
        with pytest.raises(vimigrate.MigrationFailedError) as caught:
            vimigrate.migrate(a, b, {"container": name}, at_phase("checkpoint", fill))
    finally:
        for target in mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)
    err = caught.value
    print(f"observed: phase={err.phase} rollback={err.rollback} retryable={err.retryable}: {err}")
    assert mounted and err.phase == "transfer" and err.rollback == "resumed", str(err)
    assert "No space left on device" in str(err), str(err)
    assert assert_runs_once_intact(lab, name, pair) == "provider-a"


@pytest.mark.parametrize("at", ["prepare", "checkpoint"])
def test_broker_killed_mid_migration_then_heal(lab, name, pair, destination, at):
    """The broker dies before the source was armed (the destination waits in vain) or right at
    the freeze (the hosts may finish the move on their own): the next migration is refused
    while the lock says one runs, and heal settles it."""
    run_busy_counter(lab, name, mib=50)
    kill_cli_migrate_at(start_cli_migrate(lab, name, "provider-a", destination), at)
    a, b = connect(lab, "provider-a"), connect(lab, destination)
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate(a, b, {"container": name})
    assert refused.value.phase == "preflight" and refused.value.rollback == "nothing_to_undo"
    assert "being migrated already" in str(refused.value) and "run heal" in str(refused.value)
    healed = heal(lab, name, pair)
    print(f"observed: refused: {refused.value}; heal: {healed}")
    where = assert_runs_once_intact(lab, name, pair)
    assert healed["runs_on"] == where
    # Healed: the next migration goes through.
    other = b if where == "provider-a" else a
    source = a if where == "provider-a" else b
    assert vimigrate.migrate(source, other, {"container": name})["destination"] == other.name
