"""Faults during a live migration on the lab's real providers, one per phase: a daemon killed or
restarted, the link between the providers cut, the destination's disk full, the broker killed.
After each, the service runs on exactly one provider with its state intact (the counter goes on
from where it was, without restarting or skipping), and the error names the phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import vimigrate
from conftest import ROOT, docker, numbers, run, wait_for
from test_migrate_lab import connect

pytestmark = pytest.mark.lab

LAB_RUN = Path("/run/vimigrate-lab")


@pytest.fixture
def name(lab: dict):
    container = f"vmtest-fault-{uuid.uuid4().hex[:8]}"
    yield container
    ensure_lab()
    for provider in ("provider-a", "provider-b"):
        docker(lab, provider, "rm", "-f", container, f"vimigrate-lock-{container}", check=False)
        helpers = docker(lab, provider, "ps", "-aq", "--filter", f"label=io.vimigrate.helper.for={container}",
                         check=False).split()
        if helpers:
            docker(lab, provider, "rm", "-f", *helpers, check=False)


def ensure_lab() -> None:
    """Starts whatever lab daemon a test killed (the lab's own idempotent start)."""
    result = run(["bash", str(ROOT / "scripts/lab/up.sh")], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def dockerd_pid(provider: str) -> int:
    return int((LAB_RUN / provider / "dockerd.pid").read_text())


def run_counter(lab: dict, name: str, mib: int = 0, provider: str = "provider-a") -> None:
    """A counter under the vimigrate runtime printing one number every 0.2 s, next to a process
    holding `mib` MiB of touched memory (the lab's web application: a longer dump and
    transfer)."""
    if mib:
        image = lab["images"]["web"]
        script = (f"MEM_MIB={mib} REDIS_ADDR=127.0.0.1:1 /usr/local/bin/vimigrate-labapp >/dev/null 2>&1 & "
                  "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done")
    else:
        image = lab["images"]["counter"]
        script = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done"
    docker(lab, provider, "run", "-d", "--name", name, "--runtime", "vimigrate",
           "--label", "io.vimigrate.managed=true", "--entrypoint", "/bin/sh", image, "-c", script)
    wait_for(lambda: len(numbers(docker(lab, provider, "logs", name))) >= 3 + mib // 50, timeout=30,
             what="the counter to count (and the memory to be touched)")


def where_it_runs(lab: dict, name: str) -> list[str]:
    running = []
    for provider in ("provider-a", "provider-b"):
        state = docker(lab, provider, "ps", "-q", "--filter", f"name=^/{name}$", check=False).strip()
        if state:
            running.append(provider)
    return running


def assert_runs_once_intact(lab: dict, name: str) -> str:
    """The container runs on exactly one provider, counting on from its frozen state (restored,
    not restarted: no number repeats or is skipped), and nothing of the migration is left on
    either provider. Returns where it runs."""
    running = wait_for(lambda: where_it_runs(lab, name), timeout=30, what=f"{name} to run somewhere")
    assert len(running) == 1, f"{name} runs on {running}"
    provider = running[0]
    before = numbers(docker(lab, provider, "logs", name))
    time.sleep(1.5)
    seq = numbers(docker(lab, provider, "logs", name))
    assert len(seq) > len(before), f"{name} on {provider} does not count any more"
    assert seq == list(range(seq[0], seq[0] + len(seq))), f"restarted or lost numbers on {provider}: {seq}"
    # The source's own log starts at 0; a copy restored elsewhere goes on from where it was.
    assert seq[0] == 0 if provider == "provider-a" else seq[0] >= 3, seq[:5]
    for p in ("provider-a", "provider-b"):
        leftovers = docker(lab, p, "ps", "-aq", "--filter", f"label=io.vimigrate.helper.for={name}").split()
        assert leftovers == [], f"helpers left on {p}"
        assert docker(lab, p, "ps", "-aq", "--filter", f"name=^/vimigrate-lock-{name}$").strip() == "", \
            f"lock left on {p}"
        if p != provider:
            assert docker(lab, p, "ps", "-aq", "--filter", f"name=^/{name}$").strip() == "", f"a copy left on {p}"
    assert docker(lab, provider, "checkpoint", "ls", name).strip().splitlines()[1:] == [], "checkpoint left"
    return provider


def heal(lab: dict, name: str) -> dict:
    return vimigrate.heal([connect(lab, "provider-a"), connect(lab, "provider-b")], name)


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


def test_destination_daemon_killed_during_the_transfer(lab, name):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b", timeout=20)
    run_counter(lab, name, mib=300)
    killed = []

    def kill_b() -> None:
        os.kill(dockerd_pid("provider-b"), signal.SIGKILL)
        killed.append(time.monotonic())
        # The daemon comes back while the rollback waits for it.
        threading.Timer(2.0, ensure_lab).start()

    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name}, at_phase("checkpoint", kill_b, delay=0.3))
    err = caught.value
    print(f"observed: phase={err.phase} rollback={err.rollback} retryable={err.retryable}: {err}")
    assert killed and err.phase in ("checkpoint", "transfer", "restore"), str(err)
    assert err.rollback in ("resumed", "held"), str(err)
    ensure_lab()
    report = heal(lab, name)
    print(f"observed: heal: {report}")
    assert report["runs_on"] in ("provider-a", "provider-b"), report
    assert_runs_once_intact(lab, name)


def test_destination_daemon_killed_during_the_restore(lab, name):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b", timeout=20)
    run_counter(lab, name, mib=100)

    def kill_b() -> None:
        os.kill(dockerd_pid("provider-b"), signal.SIGKILL)
        threading.Timer(2.0, ensure_lab).start()

    # On the direct path the transfer phase starts once the source's dump is through and the
    # destination confirmed every digest: the destination is restoring then.
    try:
        report = vimigrate.migrate(a, b, {"container": name}, at_phase("transfer", kill_b))
        outcome = f"succeeded ({report['destination']})"
    except vimigrate.MigrationFailedError as err:
        assert err.phase in ("transfer", "restore"), str(err)
        assert err.rollback in ("resumed", "held"), str(err)
        outcome = err.rollback
    ensure_lab()
    healed = heal(lab, name)
    where = assert_runs_once_intact(lab, name)
    print(f"observed: {outcome}; heal: {healed}")
    assert healed["runs_on"] == where, (outcome, healed)


def test_source_daemon_restarted_after_the_checkpoint(lab, name):
    a, b = connect(lab, "provider-a", timeout=20), connect(lab, "provider-b")
    run_counter(lab, name, mib=50)

    def restart_a() -> None:
        pid = dockerd_pid("provider-a")
        os.kill(pid, signal.SIGTERM)
        # Down until it exited; the destination restores meanwhile (its start is in flight).
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, what="provider-a's dockerd to stop")

    report = vimigrate.migrate(a, b, {"container": name}, at_phase("transfer", restart_a))
    # The container runs on B: what the source's restart kept from the cleanup is reported.
    assert report["destination"] == "provider-b"
    print(f"observed: succeeded with warnings {report.get('warnings')}")
    ensure_lab()
    print(f"observed: heal: {heal(lab, name)}")
    assert assert_runs_once_intact(lab, name) == "provider-b"


def test_link_between_the_providers_cut_mid_transfer(lab, name):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b", timeout=20)
    run_counter(lab, name, mib=300)
    link = "veth-vmlab-b"
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
    assert assert_runs_once_intact(lab, name) == "provider-a"


def test_destination_disk_full(lab, name):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    run_counter(lab, name, mib=64)
    root_b = Path(docker(lab, "provider-b", "info", "-f", "{{.DockerRootDir}}").strip())
    mounted = []

    def fill() -> None:
        # A small filesystem where the destination's images go (its checkpoints directory).
        full_id = docker(lab, "provider-b", "ps", "-a", "--no-trunc", "-q", "--filter", f"name=^/{name}$").strip()
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
    assert assert_runs_once_intact(lab, name) == "provider-a"


def _cli_migrate(lab: dict, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vimigrate", "migrate", name]
    for prefix, p in (("from", "provider-a"), ("to", "provider-b")):
        cmd += [f"--{prefix}-name", p, f"--{prefix}-docker-host", lab["providers"][p]["docker_host"],
                f"--{prefix}-public-address", lab["providers"][p]["public_address"]]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("at", ["prepare", "checkpoint"])
def test_broker_killed_mid_migration_then_heal(lab, name, at):
    """The broker dies before the source was armed (the destination waits in vain) or right at
    the freeze (the hosts may finish the move on their own): the next migration is refused
    while the lock says one runs, and heal settles it."""
    run_counter(lab, name, mib=50)
    broker = _cli_migrate(lab, name)
    for line in broker.stderr:
        if line.startswith(f"{at}..."):
            broker.kill()
            break
    broker.wait(timeout=30)
    assert broker.returncode == -signal.SIGKILL
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate(a, b, {"container": name})
    assert refused.value.phase == "preflight" and refused.value.rollback == "nothing_to_undo"
    assert "being migrated already" in str(refused.value) and "run heal" in str(refused.value)
    healed = heal(lab, name)
    print(f"observed: refused: {refused.value}; heal: {healed}")
    where = assert_runs_once_intact(lab, name)
    assert healed["runs_on"] == where
    # Healed: the next migration goes through.
    other = b if where == "provider-a" else a
    source = a if where == "provider-a" else b
    assert vimigrate.migrate(source, other, {"container": name})["destination"] == other.name


@pytest.mark.cfy
def test_heal_workflow_after_a_broker_died_mid_migration(lab, cfy, tmp_path):
    """A deployment's Redis is caught mid-migration by a broker that dies; `cfy executions
    start heal` puts it on one provider, records where, and the application goes on counting."""
    import json as _json

    from test_cfy_local import _cfy, _webapp_inputs, visits_at

    env = dict(os.environ, CFY_WORKDIR=str(tmp_path / "cfy"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    blueprint_id = f"heal-{uuid.uuid4().hex[:6]}"
    port = 18190
    inputs = _webapp_inputs(lab, tmp_path, {"web_public_port": port, "redis_public_port": port + 300,
                                            "dns_name": blueprint_id, "dns_ttl": 2})
    _cfy(cfy, env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    a_addr = lab["providers"]["provider-a"]["public_address"]
    try:
        _cfy(cfy, env, "executions", "start", "install", "-b", blueprint_id)
        before = wait_for(lambda: visits_at(a_addr, port), what="the web server to count")
        broker = _cli_migrate(lab, f"{blueprint_id}-redis")
        for line in broker.stderr:
            if line.startswith("checkpoint..."):
                broker.kill()
                break
        broker.wait(timeout=30)
        out = _cfy(cfy, env, "executions", "start", "heal", "-b", blueprint_id)
        assert "heal done" in out, out
        [redis] = _json.loads(_cfy(cfy, env, "node-instances", "-b", blueprint_id, "redis"))
        where = redis["runtime_properties"]["provider"]
        assert where_it_runs(lab, f"{blueprint_id}-redis") == [where], where
        address = lab["providers"][where]["public_address"]
        # The web server still runs on provider-a; it reaches Redis again (where it runs, once
        # it reconnects) and the count goes on from where it was.
        if where == "provider-a":
            after = wait_for(lambda: _try_visits(a_addr, port), timeout=30, what="the web server to count again")
            assert after > before, (before, after)
        else:
            assert address == lab["providers"]["provider-b"]["public_address"]
    finally:
        _cfy(cfy, env, "executions", "start", "uninstall", "-b", blueprint_id)
    # Nothing of the deployment is left anywhere, not even the network the dead broker's
    # migration had made on provider-b.
    for provider in ("provider-a", "provider-b"):
        assert docker(lab, provider, "ps", "-aq", "--filter", f"name={blueprint_id}").strip() == "", provider
        networks = docker(lab, provider, "network", "ls", "--format", "{{.Name}}").split()
        assert not [n for n in networks if n.startswith(blueprint_id)], f"a network of {blueprint_id} left on {provider}"


def _try_visits(address: str, port: int) -> int | None:
    from test_cfy_local import visits_at

    try:
        return visits_at(address, port)
    except Exception:  # noqa: BLE001 - not answering yet
        return None
