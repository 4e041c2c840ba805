"""A provider that is a machine of its own: the lab's qemu guest (Debian 13's kernel 6.12, its own
dockerd 26.1, containerd 1.7 and runc 1.1, the lab's CRIU 4.2.1, cgroup v1 laid out as on the host
but for the memory and cpuset hierarchies its kernel has only for v2; its API over TLS). Its
emulated CPU lacks the host's AVX-512 and more, and has AMD's sse4a, which the host lacks: the
preflight refuses either way, naming the features, unless the user overrides the check. A
process restored onto a CPU without an extension it picked at start-up dies at its next use
(glibc's string functions choose AVX-512 where they find it): the workloads moved here mask
those extensions with GLIBC_TUNABLES, as a user who overrides the check would. The guest is slow
(software emulation): these tests prove function, not speed.

`make test-guest` boots the guest (once; it is reused) and runs this file."""

from __future__ import annotations

import uuid

import pytest
from framework import lab as lab_view
from framework.engine import MANAGED, connect, docker, docker_at
from framework.process import wait_for
from framework.workloads import (
    assert_redis_holds,
    consecutive,
    numbers,
    redis,
    run_busy_counter,
    run_counter,
    wait_for_redis,
)

import vimigrate
from vimigrate import _native


@pytest.fixture(scope="module")
def guest() -> lab_view.GuestFacts:
    try:
        return lab_view.guest()
    except lab_view.LabMissingError as missing:
        pytest.fail(str(missing))


def gdocker(guest, *args: str, check: bool = True) -> str:
    tls = guest.tls
    return docker_at(guest.docker_host, "--tlsverify", "--tlscacert", tls.ca, "--tlscert", tls.cert,
                     "--tlskey", tls.key, *args, check=check)


@pytest.fixture
def name(lab, guest):
    container = f"vmtest-guest-{uuid.uuid4().hex[:8]}"
    yield container
    docker(lab, "provider-a", "rm", "-f", container, check=False)
    gdocker(guest, "rm", "-f", container, check=False)


#: What a user who overrides the CPU check does: the process never picks the extensions the
#: guest lacks (glibc's ifuncs read these at start-up).
NO_AVX512 = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
#: The CPU check overridden both ways (the guest's sse4a, the host's AVX-512); the CRIU proof
#: skipped: in the emulated guest it costs about 20 s a move, and the first test proves CRIU there.
OVERRIDE = {"ignore_host_checks": ["cpu"]}
FAST = {**OVERRIDE, "check_criu": False}


def on_guest(guest) -> vimigrate.Provider:
    return vimigrate.Provider.connect(guest.config())


def counted_on_guest(guest, name: str) -> list[int]:
    return numbers(gdocker(guest, "logs", name, check=False))


def test_the_guest_is_another_machine(lab, guest):
    host = lab.a.require_versions()
    assert guest.kernel.startswith("6.12.") and guest.kernel != host.kernel, (guest.kernel, host.kernel)
    assert guest.engine.startswith("26.1.") and guest.criu == lab.criu.version, guest
    assert guest.cgroup_version == host.cgroup_version == "1", "the guest mounts the host's cgroup v1 layout"
    report = on_guest(guest).probe()
    assert report["kernel_version"] == guest.kernel and report["vimigrate_runtime"], report
    assert report["api_version"] == "1.45", report


def test_a_cpu_lacking_the_host_s_features_is_refused_by_name(lab, guest, name):
    run_counter(lab, name, runtime="vimigrate")
    a, g = connect(lab, "provider-a"), on_guest(guest)
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate(a, g, {"container": name})
    err = refused.value
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    assert "provider `provider-guest`: CPU lacks" in str(err) and "avx512f" in str(err), str(err)
    assert "that the container's process may use" in str(err) and "host check `cpu`" in str(err), str(err)
    assert g.inspect_container(name) is None
    assert len(numbers(docker(lab, "provider-a", "logs", name))) >= 3
    # The plan says why, and what differs: kernels, CRIU on both, the guest's CPU model.
    plan = _native.plan_migration(a, g, {"container": name, **OVERRIDE})
    hosts = plan["hosts"]
    assert hosts["destination"]["kernel"] == guest.kernel and hosts["destination"]["criu"] == guest.criu, hosts
    assert any(c["check"] == "cpu" and c["outcome"] == "overridden" for c in hosts["checks"]), hosts["checks"]


def _moved_on(before: list[int], after: list[int]) -> None:
    assert after and consecutive(after) and after[0] == before[-1] + 1, (before[-3:], after[:3])


def test_a_counter_moves_to_the_guest_kernel_and_back(lab, guest, name):
    """Host 6.18 -> guest 6.12 (CPU check overridden, AVX-512 masked), then back, each time going
    on from where it was frozen."""
    run_counter(lab, name, "-e", NO_AVX512, runtime="vimigrate")
    a, g = connect(lab, "provider-a"), on_guest(guest)
    there = vimigrate.migrate(a, g, {"container": name, "keep_source": True, **OVERRIDE})
    assert there["method"] == "direct", there
    on_g = wait_for(lambda: (s := counted_on_guest(guest, name)) and len(s) >= 2 and s, timeout=60,
                    what="output on the guest")
    _moved_on(numbers(docker(lab, "provider-a", "logs", name)), on_g)
    docker(lab, "provider-a", "rm", "-f", name)
    back = vimigrate.migrate(g, a, {"container": name, "keep_source": True, **FAST})
    assert back["method"] == "direct", back
    on_a = wait_for(lambda: (s := numbers(docker(lab, "provider-a", "logs", name))) and len(s) >= 2 and s,
                    what="output on provider-a")
    _moved_on(counted_on_guest(guest, name), on_a)
    print(f"observed: host -> guest downtime {there['stats']['downtime_ms']} ms, total {there['stats']['total_ms']} "
          f"ms; back {back['stats']['downtime_ms']} ms, total {back['stats']['total_ms']} ms")


def test_redis_with_10000_keys_moves_to_the_guest_and_back(lab, guest, name):
    port = 16600
    docker(lab, "provider-a", "run", "-d", "--name", name, "--runtime", "vimigrate", "--label", MANAGED,
           "-e", NO_AVX512, "-p", f"{port}:6379", lab.images.redis)
    wait_for_redis(lab.a.public_address, port, "redis on A")
    keys = [(f"key:{i}", f"value-{i}-{uuid.uuid4().hex}") for i in range(10_000)]
    assert set(redis(lab.a.public_address, port, [["SET", k, v] for k, v in keys])) == {b"+OK"}
    a, g = connect(lab, "provider-a"), on_guest(guest)
    vimigrate.migrate(a, g, {"container": name, **FAST})
    assert_redis_holds(guest.public_address, port, keys)
    vimigrate.migrate(g, a, {"container": name, **FAST})
    assert_redis_holds(lab.a.public_address, port, keys)


def test_pre_copy_from_the_guest_whose_kernel_tracks_dirty_memory(lab, guest, name):
    """The guest's kernel has soft-dirty bits (the host's has none): memory moved off the guest
    is pre-dumped and streamed while the service runs, round after round, and the freeze
    carries what was dirtied since; `auto` takes it there and says why. The counter goes on
    from where it was. (A heap dirtied 10 % a second is the bench's: under emulation a round
    takes longer than the heap takes to be rewritten, so rounds do not shrink there.)"""
    run_busy_counter(lab, name, mib=48, kind="text", docker_args=("-e", NO_AVX512))
    a, g = connect(lab, "provider-a"), on_guest(guest)
    vimigrate.migrate(a, g, {"container": name, **FAST})
    wait_for(lambda: len(counted_on_guest(guest, name)) >= 2, timeout=60, what="output on the guest")
    plan = _native.plan_migration(g, a, {"container": name, **FAST, "memory": "auto"})
    assert plan["memory"] == "pre-copy" and "tracks dirty memory" in plan["memory_reason"], plan["memory_reason"]
    assert plan["pre_copy"] and plan["pre_copy"]["max_rounds"] >= 2, plan
    back = vimigrate.migrate(g, a, {"container": name, "keep_source": True, **FAST, "memory": "pre-copy"})
    stats = back["stats"]
    assert back["memory"] == "pre-copy", back
    assert stats["predump_rounds"] >= 1 and stats["predump_bytes"] > 40 << 20, stats
    # The first round carried the heap; the freeze only what was dirtied since.
    assert stats["round_bytes"][0] > 40 << 20 and stats["round_bytes"][-1] * 4 < stats["round_bytes"][0], stats
    assert stats["checkpoint_bytes"] < stats["predump_bytes"], stats
    on_a = wait_for(lambda: (s := numbers(docker(lab, "provider-a", "logs", name))) and len(s) >= 2 and s,
                    what="output on provider-a")
    _moved_on(counted_on_guest(guest, name), on_a)
    print(f"observed: guest -> host pre-copy {stats['predump_rounds']} rounds {stats['round_bytes']} in "
          f"{stats['predump_ms']} ms, downtime {stats['downtime_ms']} ms, total {stats['total_ms']} ms")


def test_pre_copy_failing_after_the_rounds_resumes_the_guest_from_its_chained_dump(lab, guest, name):
    """A corrupted stream after the rounds: the destination refuses it, and the source resumes
    from its own dump, whose memory is spread over the pre-dump chain it keeps."""
    run_busy_counter(lab, name, mib=16, kind="text", dirty_percent=10, docker_args=("-e", NO_AVX512))
    a, g = connect(lab, "provider-a"), on_guest(guest)
    vimigrate.migrate(a, g, {"container": name, **FAST})
    before = wait_for(lambda: (s := counted_on_guest(guest, name)) and len(s) >= 2 and s, timeout=60,
                      what="output on the guest")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(g, a, {"container": name, **FAST, "memory": "pre-copy", "fault": "corrupt_stream"})
    err = caught.value
    assert err.rollback == "resumed", str(err)
    after = wait_for(lambda: (s := counted_on_guest(guest, name)) and s[-1] > before[-1] + 2 and s, timeout=60,
                     what="the counter going on on the guest")
    assert consecutive(after), after[-10:]
    assert docker(lab, "provider-a", "ps", "-aq", "--filter", f"name=^{name}$").strip() == ""
