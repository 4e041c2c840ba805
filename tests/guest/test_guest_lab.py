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
from framework.workloads import assert_redis_holds, consecutive, numbers, redis, run_counter, wait_for_redis

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
