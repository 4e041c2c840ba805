"""The direct migration path on the lab's real providers: containers under vimigrate-runtime move
host to host (dump streamed to the destination, restored by a plain `docker start` there) and
stay ordinary Docker containers; corruption, an unreachable destination and a failed restore all
leave the service running on the source."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from framework.engine import checkpoints, connect, docker, helpers, on_both, root_dir
from framework.process import wait_for
from framework.workloads import (
    assert_redis_holds,
    consecutive,
    count_on,
    counted,
    redis_with_keys,
    run_counter,
)

import vimigrate

RUNC_CONF = Path("/etc/criu/runc.conf")


@pytest.fixture
def name(lab):
    container = f"vmtest-direct-{uuid.uuid4().hex[:8]}"
    yield container
    on_both(lab, "rm", "-f", container)


def test_the_lab_providers_offer_the_runtime(providers):
    for provider in providers:
        report = provider.probe()
        assert report["vimigrate_runtime"] is True and "vimigrate" in report["runtimes"], report


def test_a_counter_moves_directly_and_stays_docker_managed(lab, providers, name):
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    conf_before = RUNC_CONF.read_bytes()
    report = vimigrate.migrate(a, b, {"container": name, "keep_source": True})
    assert report["method"] == "direct" and report["method_reason"] is None, report
    last_on_a = counted(lab, "provider-a", name)[-1]
    on_b = wait_for(lambda: counted(lab, "provider-b", name), what="output on B")
    assert on_b[0] == last_on_a + 1, (last_on_a, on_b)
    stats = report["stats"]
    assert stats["checkpoint_bytes"] > 0 and stats["transfer_bytes"] >= stats["checkpoint_bytes"]
    assert 0 < stats["downtime_ms"] < 10_000 and stats["restore_ms"] > 0
    assert stats["criu_dump"]["pages_written"] > 0 and stats["criu_restore"]["restore_time_us"] > 0, stats
    # CRIU ran with this container's own options: the host-wide file is as it was.
    assert RUNC_CONF.read_bytes() == conf_before
    # An ordinary Docker container on B: it runs under the runtime, stops, and moves again.
    assert docker(lab, "provider-b", "inspect", "-f", "{{.HostConfig.Runtime}}", name).strip() == "vimigrate"
    assert checkpoints(lab, "provider-b", name) == [], "images deleted"
    docker(lab, "provider-a", "rm", "-f", name)
    back = vimigrate.migrate(b, a, {"container": name})
    assert back["method"] == "direct"
    again = wait_for(lambda: counted(lab, "provider-a", name), what="output on A again")
    assert again[0] > on_b[0], (on_b, again)
    docker(lab, "provider-a", "stop", "-t", "1", name)
    assert docker(lab, "provider-a", "inspect", "-f", "{{.State.Running}}", name).strip() == "false"


def test_the_network_is_prepared_before_the_freeze_and_docker_s_path_still_works_after(lab, providers, name):
    """The destination runs Docker's network hook while it waits (not inside the interruption),
    and the restored container is an ordinary one: Docker's own checkpoint path moves it on,
    which it could not if its dump expected a prepared network namespace back."""
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    there = vimigrate.migrate(a, b, {"container": name})
    assert there["method"] == "direct", there
    assert there["stats"]["network_ms"] > 0, there["stats"]
    on_b = wait_for(lambda: counted(lab, "provider-b", name), what="output on B")
    # The restored container has its network: Docker gave it its address on B's bridge.
    address = docker(lab, "provider-b", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip()
    assert lab.b.in_bridge_subnet(address), address
    back = vimigrate.migrate(b, a, {"container": name, "method": "docker"})
    assert back["method"] == "docker", back
    again = wait_for(lambda: counted(lab, "provider-a", name), what="output on A again")
    # The counter went on from where B had it, in memory: not a fresh start.
    assert again[0] > on_b[-1], (on_b[-3:], again[:3])


def test_redis_keys_survive_the_direct_path(lab, providers, name):
    a, b = providers
    port = 16511
    keys = redis_with_keys(lab, name, port, runtime="vimigrate")
    report = vimigrate.migrate(a, b, {"container": name})
    assert report["method"] == "direct"
    assert_redis_holds(lab.b.public_address, port, keys)


def test_files_changed_after_the_first_copy_follow_deletions_included(lab, providers, name):
    """The writable layer as it is at the freeze: appended, created, deleted (a file of the image
    too), a file the process holds open; the volume whole."""
    a, b = providers
    volume = f"{name}-data"
    script = ("echo start > /tmp/held; echo old > /tmp/gone; head -c 2000000 /dev/urandom > /data/blob; "
              "exec 3>>/tmp/held; i=0; while :; do echo $i >&3; echo $i; i=$((i+1)); sleep 0.3; done")
    changed = []

    def on_event(event: dict) -> None:
        # After the first copy, before the freeze.
        if event["event"] == "phase" and event["phase"] == "checkpoint" and not changed:
            docker(lab, "provider-a", "exec", name, "sh", "-c",
                   "echo late > /tmp/late; rm /tmp/gone /etc/nsswitch.conf; md5sum /data/blob > /data/sum")
            changed.append(True)

    try:
        run_counter(lab, name, "-v", f"{volume}:/data", command=["sh", "-c", script], runtime="vimigrate")
        assert docker(lab, "provider-a", "exec", name, "test", "-f", "/etc/nsswitch.conf", check=False) == ""
        report = vimigrate.migrate(a, b, {"container": name}, on_event)
        assert changed and report["method"] == "direct"
        assert docker(lab, "provider-b", "exec", name, "cat", "/tmp/late").strip() == "late"
        for path in ("/tmp/gone", "/etc/nsswitch.conf"):
            assert _missing(lab, name, path), f"{path} was deleted on A"
        summed = docker(lab, "provider-b", "exec", name, "cat", "/data/sum").split()[0]
        assert docker(lab, "provider-b", "exec", name, "md5sum", "/data/blob").split()[0] == summed
        time.sleep(1)
        held = docker(lab, "provider-b", "exec", name, "cat", "/tmp/held").split()
        written = [int(x) for x in held[1:]]
        assert held[0] == "start" and written == list(range(len(written))) and len(written) >= 8, held
    finally:
        on_both(lab, "rm", "-f", name)
        on_both(lab, "volume", "rm", "-f", volume)


def _missing(lab, name: str, path: str) -> bool:
    result = docker(lab, "provider-b", "exec", name, "sh", "-c", f"test -e {path} && echo present || echo absent")
    return result.strip() == "absent"


def _assert_resumed_on_a(lab, a, b, name: str) -> None:
    before, after = count_on(lab, "provider-a", name)
    assert a.inspect_container(name)["running"] is True
    # docker logs of a restored container go on in the same log: no restart from 0, no gap.
    assert consecutive(after) and len(after) > len(before), after
    assert b.inspect_container(name) is None, "nothing left on B"
    assert helpers(lab, "provider-b") == [], "no helper left on B"
    assert checkpoints(lab, "provider-a", name) == [], "dump deleted"


def test_a_corrupted_stream_is_caught_before_the_restore_and_rolled_back(lab, providers, name):
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name, "fault": "corrupt_stream"})
    err = caught.value
    assert err.phase == "transfer" and err.rollback == "resumed", str(err)
    assert "arrived corrupted" in str(err) and "BLAKE3" in str(err), str(err)
    _assert_resumed_on_a(lab, a, b, name)


def test_an_unreachable_destination_fails_before_anything_is_dumped(lab, name):
    a = connect(lab, "provider-a")
    nowhere = lab.unused_address()
    b = vimigrate.Provider.connect(lab.b.config(transfer_address=nowhere))
    run_counter(lab, name, runtime="vimigrate")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name})
    err = caught.value
    assert err.phase == "checkpoint" and err.rollback == "resumed", str(err)
    assert "connect" in str(err) and nowhere in str(err), str(err)
    _assert_resumed_on_a(lab, a, b, name)


def test_a_restore_failure_on_b_resumes_the_source(lab, providers, name):
    """The destination's copy of the image differs from the source's where the process maps it
    (busybox, which the counter's shell runs): CRIU refuses the restore on B. The container is
    on a user-defined network, which the migration created on B: the rollback removes it."""
    a, b = providers
    network = f"{name}-net"
    docker(lab, "provider-a", "network", "create", "--label", "io.vimigrate.managed=true", network)
    try:
        _restore_failure_rolls_back(lab, a, b, name, network)
    finally:
        docker(lab, "provider-a", "rm", "-f", name, check=False)
        on_both(lab, "network", "rm", network)


def _restore_failure_rolls_back(lab, a, b, name: str, network: str) -> None:
    run_counter(lab, name, "--network", network, runtime="vimigrate")
    injected = []
    root_b = root_dir(lab, "provider-b")

    def on_event(event: dict) -> None:
        if event["event"] == "phase" and event["phase"] == "checkpoint" and not injected:
            # B's container is starting (its inspect waits): find its root filesystem the way
            # the storage driver lays it out.
            [full_id] = docker(lab, "provider-b", "ps", "-a", "--no-trunc", "-q", "--filter",
                               f"name=^/{name}$").split()
            mount = (root_b / "image/overlay2/layerdb/mounts" / full_id / "mount-id").read_text().strip()
            busybox = root_b / "overlay2" / mount / "merged/bin/busybox"
            busybox.unlink()
            busybox.write_bytes(b"\x7fELF not busybox")
            injected.append(busybox)

    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name}, on_event)
    err = caught.value
    assert injected and err.phase == "restore" and err.rollback == "resumed", str(err)
    assert "runc restore failed" in str(err) and "CRIU's log" in str(err), str(err)
    _assert_resumed_on_a(lab, a, b, name)
    assert network not in docker(lab, "provider-b", "network", "ls", "--format", "{{.Name}}").split(), \
        "the network the migration created is left on B"


def test_a_container_under_runc_takes_docker_s_path_and_says_why(lab, providers, name):
    a, b = providers
    run_counter(lab, name, runtime="runc", at_least=2)
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name, "method": "direct"})
    assert caught.value.phase == "preflight" and caught.value.rollback == "nothing_to_undo"
    assert "runs under runtime `runc`" in str(caught.value), str(caught.value)
    assert b.inspect_container(name) is None
    report = vimigrate.migrate(a, b, {"container": name})
    assert report["method"] == "docker" and "runtime `runc`" in report["method_reason"], report
    # The destination runs it under the runtime, so the way back is direct.
    assert docker(lab, "provider-b", "inspect", "-f", "{{.HostConfig.Runtime}}", name).strip() == "vimigrate"
    assert vimigrate.migrate(b, a, {"container": name})["method"] == "direct"


def test_an_unknown_method_is_refused(providers, name):
    a, b = providers
    with pytest.raises(vimigrate.InvalidInputError) as wrong:
        vimigrate.migrate(a, b, {"container": name, "method": "teleport"})
    assert wrong.value.field == "options.method"

