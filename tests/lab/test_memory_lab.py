"""How the memory moves, on the lab's real providers and CRIU: post-copy restores the container
before its memory arrived (CRIU's lazy pages over userfaultfd, the pages relayed host to host
inside the migration's TLS connection) and releases the source once every page went; what the
process holds is intact afterwards. A failure before the restore resumes the source. After it:
CRIU killed on the source releases its processes whole, and the source is the copy kept; the
source's runtime killed ends them with the memory split, which loses the container on both
hosts, said plainly, with nothing left running, and heal restarts it from its image only when
asked to."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
from framework.engine import checkpoints, connect, container_ids, docker, heal, helpers, on_both, root_dir, running_on
from framework.link import shaped
from framework.process import wait_for
from framework.workloads import (
    assert_redis_holds,
    consecutive,
    counted,
    redis_with_keys,
    run_busy_counter,
    run_counter,
)

import vimigrate
from vimigrate import _native

POST_COPY = {"memory": "post-copy"}


@pytest.fixture
def name(lab):
    container = f"vmtest-memory-{uuid.uuid4().hex[:8]}"
    yield container
    on_both(lab, "rm", "-f", container)


def test_post_copy_moves_a_counter_there_and_back(lab, providers, name):
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    plan = _native.plan_migration(a, b, {"container": name, **POST_COPY})
    assert plan["memory"] == "post-copy" and "loses what the service did" in plan["memory_reason"], plan
    assert any(line.startswith("  memory: post-copy") for line in plan["lines"]), plan["lines"]

    there = vimigrate.migrate(a, b, {"container": name, "keep_source": True, **POST_COPY})
    assert there["memory"] == "post-copy" and there["method"] == "direct", there
    stats = there["stats"]
    assert stats["page_bytes"] > 0 and stats["postcopy_ms"] > 0, stats
    # The counter goes on from its last number on A: its memory came over after the restore.
    last_on_a = counted(lab, "provider-a", name)[-1]
    on_b = wait_for(lambda: counted(lab, "provider-b", name), what="output on B")
    assert on_b[0] == last_on_a + 1, (last_on_a, on_b[:3])
    assert docker(lab, "provider-a", "inspect", "-f", "{{.State.Running}}", name).strip() == "false"
    docker(lab, "provider-a", "rm", "-f", name)

    back = vimigrate.migrate(b, a, {"container": name, **POST_COPY})
    assert back["stats"]["page_bytes"] > 0
    again = wait_for(lambda: counted(lab, "provider-a", name), what="output on A again")
    assert again[0] > on_b[-1] - 1, (on_b[-3:], again[:3])


def test_post_copy_keeps_every_redis_key_and_a_big_heap(lab, providers, name):
    """Memory the process touched before the freeze arrives after the restore, all of it:
    10,000 keys read back by value, and 100 MiB moved as pages after the restore."""
    a, b = providers
    port = 16531
    keys = redis_with_keys(lab, name, port, runtime="vimigrate")
    moved = vimigrate.migrate(a, b, {"container": name, **POST_COPY})
    assert moved["stats"]["page_bytes"] > 1 << 20, moved["stats"]
    assert_redis_holds(lab.b.public_address, port, keys)

    big = f"{name}-heap"
    try:
        run_busy_counter(lab, big, mib=100)
        heap = vimigrate.migrate(a, b, {"container": big, **POST_COPY})
        assert heap["stats"]["page_bytes"] > 100 << 20, heap["stats"]
        # The freeze carried everything but the memory: far less than the heap.
        assert heap["stats"]["checkpoint_bytes"] < 20 << 20, heap["stats"]
        wait_for(lambda: len(counted(lab, "provider-b", big)) > 3, what="the heap's counter on B")
    finally:
        on_both(lab, "rm", "-f", big)


def test_post_copy_refused_where_the_direct_path_is_not_taken(lab, providers, name):
    a, b = providers
    run_counter(lab, name)  # under runc: Docker's path
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name, **POST_COPY})
    err = caught.value
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    assert "post-copy needs the direct path" in str(err), str(err)


def test_an_unknown_memory_mode_names_the_field(providers, name):
    a, b = providers
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.migrate(a, b, {"container": name, "memory": "precopy-ish"})
    assert caught.value.field.startswith("options.memory"), caught.value.field


def test_a_failure_before_the_restore_resumes_the_post_copy_source(lab, providers, name):
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name, "fault": "corrupt_stream", **POST_COPY})
    err = caught.value
    assert err.rollback == "resumed", str(err)
    assert "arrived corrupted" in str(err), str(err)
    before = counted(lab, "provider-a", name)
    wait_for(lambda: len(counted(lab, "provider-a", name)) > len(before) + 2, what="the counter going on on A")
    assert connect(lab, "provider-b").inspect_container(name) is None


def test_the_source_criu_killed_inside_the_window_keeps_the_source_whole(lab, providers, name):
    """CRIU's page server killed on the source while pages are still due: CRIU releases the
    frozen processes whole, so the source, not the destination's half of the memory, is the copy
    kept. The destination's copy stops and goes; the source counts on from where it was frozen,
    and the error says what was lost (what B did since its restore) and for how long."""
    a, b = providers
    run_busy_counter(lab, name, mib=200)
    err = _post_copy_killed_inside_the_window(lab, a, b, name, _criu_pids_of)
    assert err.phase == "postcopy" and err.rollback == "resumed", str(err)
    assert "goes on here from where it was frozen" in str(err) and "is gone" in str(err), str(err)
    assert "s after the destination restored" in str(err), str(err)
    assert running_on(lab, name) == ["provider-a"]
    assert container_ids(lab, "provider-b", f"name=^/{name}$") == []
    before = counted(lab, "provider-a", name)
    wait_for(lambda: len(counted(lab, "provider-a", name)) > len(before) + 2, what="the counter going on on A")
    # Whole: the count on A goes on without a gap or a restart across the failed move.
    assert consecutive(counted(lab, "provider-a", name)), counted(lab, "provider-a", name)[-20:]
    for provider in ("provider-a", "provider-b"):
        assert helpers(lab, provider, name) == [], provider
    assert checkpoints(lab, "provider-a", name) == []


def test_the_source_runtime_killed_inside_the_window_stops_both_copies_and_says_so(lab, providers, name):
    """The price of post-copy: the source's runtime killed while pages are still due closes
    CRIU's page-server connection, and CRIU ends the frozen processes with the memory split
    between the hosts. The destination's runtime kills its copy; the container runs nowhere, the
    error says so, and its stopped container stays on B to be started afresh. Heal then refuses,
    naming the option that restarts it from its image; with the option, B's copy starts afresh
    (its counter begins at 0 again), whatever an earlier migration left in its state directory."""
    a, b = providers
    run_busy_counter(lab, name, mib=200)
    err = _post_copy_killed_inside_the_window(lab, a, b, name, _runtimes_of)
    assert err.phase == "postcopy" and err.rollback == "lost", str(err)
    assert "runs on neither provider" in str(err) and "since the restore" in str(err), str(err)
    assert docker(lab, "provider-b", "inspect", "-f", "{{.State.Running}}", name).strip() == "false"
    assert docker(lab, "provider-a", "ps", "-q", "--filter", f"name=^{name}$").strip() == ""

    # Its process state is gone with the pages: heal does not pretend otherwise, and changes nothing.
    with pytest.raises(vimigrate.NotFoundError) as refused:
        heal(lab, name)
    assert "process state" in str(refused.value) and "restart_from_image" in str(refused.value), str(refused.value)
    assert "--restart-from-image" in str(refused.value), str(refused.value)
    assert running_on(lab, name) == []

    # Leftovers of an earlier migration that would turn a plain start into something else: a
    # restore directive (the runtime would try a restore instead of the start) and a restore's mark
    # (the runtime would answer runc's start without running the process).
    state = _state_dir(lab, "provider-b", name)
    migration = json.loads((state / "status.json").read_text())["migration"]
    _plant(state / "directive.json", json.dumps({
        "version": 1, "migration": migration, "images_dir": f"{state.parent}/checkpoints/{migration}",
        "criu": {"tcp": None, "skip_in_flight": True}, "deadline_unix_ms": 0, "io_timeout_ms": 30000,
        "action": {"restore": {"receive": None, "peer_files": [], "address_map": {}}}}).encode())
    _plant(state / "restored", b"")
    printed_before = len(counted(lab, "provider-b", name))

    healed = heal(lab, name, restart_from_image=True)
    assert healed["restarted_from_image"] and not healed["resumed"], healed
    assert healed["runs_on"] == "provider-b", healed
    assert running_on(lab, name) == ["provider-b"], healed
    assert container_ids(lab, "provider-a", f"name=^/{name}$") == []
    # A fresh start: the counter begins again at 0 and counts on.
    fresh = wait_for(lambda: counted(lab, "provider-b", name)[printed_before:][:3] or None, what="a fresh count")
    assert fresh[0] == 0, (printed_before, fresh)
    wait_for(lambda: len(counted(lab, "provider-b", name)) > printed_before + 3, what="the counter going on")
    assert consecutive(counted(lab, "provider-b", name)[printed_before:]), counted(lab, "provider-b", name)
    assert state.joinpath("directive.json").is_symlink() and not state.joinpath("directive.json").exists()
    assert not state.joinpath("restored").exists()
    for provider in ("provider-a", "provider-b"):
        assert helpers(lab, provider, name) == [], provider
    assert checkpoints(lab, "provider-b", name) == []


def _state_dir(lab, provider: str, name: str) -> Path:
    """vimigrate-runtime's state directory of container `name` on `provider`."""
    full_id = docker(lab, provider, "inspect", "-f", "{{.Id}}", name).strip()
    return root_dir(lab, provider) / "containers" / full_id / "vimigrate"


def _plant(path: Path, content: bytes) -> None:
    """Leaves a file in a state directory, private as the runtime's own."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _post_copy_killed_inside_the_window(lab, a, b, name: str, victims) -> vimigrate.MigrationFailedError:
    """Migrates `name` A -> B in post-copy and SIGKILLs `victims(lab, "provider-a")` once it runs
    on B; returns the migration's error."""
    # A slow link into B keeps the window open (200 MiB at 200 Mbit/s: about 8 s).
    with shaped(lab, "provider-b", mbit=200):
        killer = threading.Thread(target=_kill_once_b_runs, args=(lab, name, victims), daemon=True)
        killer.start()
        with pytest.raises(vimigrate.MigrationFailedError) as caught:
            vimigrate.migrate(a, b, {"container": name, **POST_COPY})
        killer.join(timeout=30)
    return caught.value


def _kill_once_b_runs(lab, name: str, victims) -> None:
    """SIGKILLs provider-a's `victims` once the container runs on B."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if docker(lab, "provider-b", "inspect", "-f", "{{.State.Running}}", name, check=False).strip() == "true":
            pids = victims(lab, "provider-a")
            assert pids, "nothing to kill on provider-a inside the window"
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.01)


def _runtimes_of(lab, provider: str) -> list[int]:
    """The vimigrate-runtime processes that run a dump's runc (the parents of CRIU's runc)."""
    found = {_parent(_parent(criu)) for criu in _criu_pids_of(lab, provider)}
    return sorted(pid for pid in found if os.readlink(f"/proc/{pid}/exe").endswith("vimigrate-runtime"))


def _parent(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after it.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _criu_pids_of(lab, provider: str) -> list[int]:
    """The CRIU processes runc runs on `provider`'s host (its network namespace is the dockerd's)."""
    netns = os.readlink(f"/proc/{lab.provider(provider).dockerd_pid()}/ns/net")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # The lab's CRIU runs under a loader wrapper: recognised by its arguments.
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"swrk" in args and any(a.endswith(b"criu") for a in args) \
                    and os.readlink(f"/proc/{entry}/ns/net") == netns:
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_compression_shrinks_a_text_heap_on_a_slow_link_and_leaves_noise_alone(lab, providers, name):
    """The stream's compression decides by what it measures: a heap of JSON-like text over a
    200 Mbit/s link goes compressed (the report's ratio), incompressible memory goes as it is;
    the process continues from where it was either way."""
    a, b = providers
    run_busy_counter(lab, name, mib=150, kind="text")
    plan = _native.plan_migration(a, b, {"container": name})
    assert plan["compression"] == "adaptive", plan["compression_reason"]
    assert any(line.startswith("  compression: zstd where it pays") for line in plan["lines"]), plan["lines"]
    with shaped(lab, "provider-b", mbit=200):
        there = vimigrate.migrate(a, b, {"container": name, "keep_source": True})
    stats = there["stats"]
    assert there["compression"] == "adaptive", there
    assert stats["checkpoint_bytes"] > 150 << 20, stats
    assert stats["compression_ratio"] > 2.0 and stats["wire_bytes"] * 2 < stats["transfer_bytes"], stats
    last_on_a = counted(lab, "provider-a", name)[-1]
    on_b = wait_for(lambda: counted(lab, "provider-b", name), what="output on B")
    assert on_b[0] == last_on_a + 1, (last_on_a, on_b[:3])

    other = f"{name}-noise"
    try:
        run_busy_counter(lab, other, mib=100, provider="provider-b")
        noise = vimigrate.migrate(b, a, {"container": other})["stats"]
        assert noise["compression_ratio"] < 1.05, noise
        assert noise["wire_bytes"] >= noise["transfer_bytes"] * 0.95, noise
    finally:
        on_both(lab, "rm", "-f", other)


def test_compression_off_and_zstd_as_asked(lab, providers, name):
    a, b = providers
    run_busy_counter(lab, name, mib=20, kind="text")
    off = vimigrate.migrate(a, b, {"container": name, "compression": "off"})
    assert off["compression"] == "off" and off["stats"]["wire_bytes"] == off["stats"]["transfer_bytes"], off["stats"]
    forced = vimigrate.migrate(b, a, {"container": name, "compression": "zstd"})
    assert forced["compression"] == "always" and forced["stats"]["compression_ratio"] > 2.0, forced["stats"]
    with pytest.raises(vimigrate.VimigrateError) as caught:
        vimigrate.migrate(a, b, {"container": name, "compression": "gzip"})
    assert "compression" in str(caught.value), str(caught.value)
    with pytest.raises(vimigrate.VimigrateError) as refused:
        vimigrate.migrate(a, b, {"container": name, "compression": "zstd", "method": "docker"})
    assert "compression zstd" in str(refused.value) and "Docker's checkpoint path" in str(refused.value)


def test_pre_copy_is_refused_where_the_kernel_tracks_no_dirty_memory_and_auto_says_why(lab, providers, name):
    """This host's kernel has no soft-dirty bits: pre-copy is refused in preflight naming the
    source and the check, and `auto` takes stop-and-copy with the reason in the report (the
    guest's tests move with pre-copy off a kernel that has them)."""
    a, b = providers
    run_counter(lab, name, runtime="vimigrate")
    with pytest.raises(vimigrate.VimigrateError) as caught:
        _native.plan_migration(a, b, {"container": name, "memory": "pre-copy"})
    assert "memory pre-copy" in str(caught.value) and "kernel of `provider-a` does not track dirty memory" \
        in str(caught.value), str(caught.value)
    moved = vimigrate.migrate(a, b, {"container": name, "memory": "auto"})
    assert moved["memory"] == "stop-and-copy" and moved["memory_reason"].startswith("auto: stop-and-copy"), moved
    assert "mem_dirty_track" in moved["memory_reason"] and moved["stats"]["predump_rounds"] == 0, moved
