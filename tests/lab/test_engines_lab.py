"""Live migration between the engines users run today, on the lab's real providers: Docker 20.10
(Debian 12's, provider-a and provider-b), 26.1 with containerd 1.7 (Debian 13's, provider-26) and
28.5 with containerd 2.1 (Debian sid's, provider-28; and provider-28c, the same engine keeping
images and layers in containerd's image store, as Docker 29 does by default), each with CRIU and
vimigrate-runtime.

From Docker 28 on, Docker's own `docker start --checkpoint` fails for every container with a
network namespace (moby/moby#50750); the direct path restores from a plain start through the
runtime, so it works there, and Docker's path is refused in preflight with the reason. Faults on
the 28 provider (a failed restore there, a failed restore elsewhere resumed there, the broker
killed mid-way) end with the container running once, its state intact."""

from __future__ import annotations

import time
import uuid

import pytest
from framework import engine as lab_engine
from framework.engine import (
    MANAGED,
    checkpoints,
    connect,
    container_ids,
    docker,
    helpers,
    kill_cli_migrate_at,
    root_dir,
    start_cli_migrate,
)
from framework.process import wait_for
from framework.workloads import (
    FAST_COUNT,
    assert_redis_holds,
    consecutive,
    counted,
    redis,
    run_counter,
    wait_for_redis,
)

import vimigrate
from vimigrate import _native

#: The pairs that matter, each run in both directions by its test.
PAIRS = [("provider-a", "provider-26"), ("provider-a", "provider-28"), ("provider-26", "provider-28"),
         ("provider-a", "provider-28c")]
ENGINES = ("provider-a", "provider-26", "provider-28", "provider-28c")


@pytest.fixture
def name(lab):
    container = f"vmtest-engines-{uuid.uuid4().hex[:8]}"
    yield container
    for provider in ENGINES:
        docker(lab, provider, "rm", "-f", container, f"vimigrate-lock-{container}", check=False)
        leftovers = helpers(lab, provider, container, check=False)
        if leftovers:
            docker(lab, provider, "rm", "-f", *leftovers, check=False)


def running_on(lab, name: str) -> list[str]:
    """The engines of this file where container `name` runs."""
    return lab_engine.running_on(lab, name, ENGINES)


def assert_moved_intact(lab, name: str, source: str, destination: str, last_on_source: int) -> list[int]:
    """The counter runs on `destination` only, going on from where it was frozen, and nothing of
    the migration is left on either host; what it printed there."""
    seq = wait_for(lambda: (s := counted(lab, destination, name)) and len(s) >= 2 and s,
                   what=f"output on {destination}")
    assert seq[0] == last_on_source + 1 and consecutive(seq), (last_on_source, seq[:5])
    assert running_on(lab, name) == [destination]
    for provider in (source, destination):
        assert helpers(lab, provider, name) == [], f"helpers left on {provider}"
    assert checkpoints(lab, destination, name) == [], "the images are deleted once it runs"
    return seq


def test_the_engines_are_what_debian_ships(lab):
    expected = {
        "provider-a": ("20.10", "1.6", "1.1"),
        "provider-26": ("26.1", "1.7", "1.1"),
        "provider-28": ("28.5", "2.1", "1.3"),
        "provider-28c": ("28.5", "2.1", "1.3"),
    }
    for provider, (engine, containerd, runc) in expected.items():
        versions = lab.provider(provider).require_versions()
        assert versions.engine.startswith(engine + "."), versions
        assert versions.containerd.startswith(containerd + "."), versions
        assert versions.runc.startswith(runc + "."), versions
        assert versions.criu and versions.kernel, versions
        report = connect(lab, provider).probe()
        assert report["server_version"] == versions.engine, report
        assert report["vimigrate_runtime"] and report["experimental"], report
        # The API is negotiated: 1.41 on 20.10, the engine's own newest on the newer ones.
        assert report["api_version"] == versions.api, (report["api_version"], versions.api)
        assert report["containerd_version"] == versions.containerd and report["runc_version"] == versions.runc
        assert report["cgroup_version"] == versions.cgroup_version
        store = "containerd" if provider == "provider-28c" else "overlay2"
        assert report["image_store"] == store and versions.image_store == store, (report, versions)


@pytest.mark.parametrize(("one", "other"), PAIRS)
def test_a_counter_moves_between_engines_both_ways(lab, name, one, other):
    """There and back, each time from where it was frozen (the stopped source is kept to read
    its last number, then removed for the way back)."""
    run_counter(lab, name, provider=one, runtime="vimigrate")
    here, there = connect(lab, one), connect(lab, other)
    downtimes = []
    for source, destination, src, dst in ((one, other, here, there), (other, one, there, here)):
        report = vimigrate.migrate(src, dst, {"container": name, "keep_source": True})
        assert report["method"] == "direct", report
        assert_moved_intact(lab, name, source, destination, counted(lab, source, name)[-1])
        docker(lab, source, "rm", "-f", name)
        downtimes.append(report["stats"]["downtime_ms"])
    print(f"observed: {one} -> {other} {downtimes[0]} ms, back {downtimes[1]} ms")


@pytest.mark.parametrize(("one", "other"), PAIRS)
def test_redis_with_10000_keys_moves_between_engines_both_ways(lab, name, one, other):
    port = 16500 + PAIRS.index((one, other))
    docker(lab, one, "run", "-d", "--name", name, "--runtime", "vimigrate", "--label", MANAGED,
           "-p", f"{port}:6379", lab.images.redis)
    wait_for_redis(lab.provider(one).public_address, port, f"redis on {one}")
    keys = [(f"key:{i}", f"value-{i}-{uuid.uuid4().hex}") for i in range(10_000)]
    assert set(redis(lab.provider(one).public_address, port, [["SET", k, v] for k, v in keys])) == {b"+OK"}
    here, there = connect(lab, one), connect(lab, other)
    assert vimigrate.migrate(here, there, {"container": name})["method"] == "direct"
    assert_redis_holds(lab.provider(other).public_address, port, keys)
    assert vimigrate.migrate(there, here, {"container": name})["method"] == "direct"
    assert_redis_holds(lab.provider(one).public_address, port, keys)


@pytest.mark.parametrize(("one", "other"), [("provider-a", "provider-26")])
def test_docker_s_own_path_still_works_below_28(lab, name, one, other):
    run_counter(lab, name, provider=one, runtime="runc")
    here, there = connect(lab, one), connect(lab, other)
    report = vimigrate.migrate(here, there, {"container": name, "method": "docker"})
    assert report["method"] == "docker", report
    wait_for(lambda: len(counted(lab, other, name)) >= 2, what=f"output on {other}")
    back = vimigrate.migrate(there, here, {"container": name, "method": "docker"})
    assert back["method"] == "docker", back
    assert running_on(lab, name) == [one]


@pytest.mark.parametrize(("source", "destination"), [("provider-a", "provider-28"), ("provider-28", "provider-a")])
def test_docker_s_path_is_refused_in_preflight_on_28_and_auto_goes_direct(lab, name, source, destination):
    run_counter(lab, name, provider=source, runtime="vimigrate")
    src, dst = connect(lab, source), connect(lab, destination)
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate(src, dst, {"container": name, "method": "docker"})
    err = refused.value
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    assert "provider `provider-28`" in str(err) and "moby/moby#50750" in str(err), str(err)
    assert "host check `engine`" in str(err), str(err)
    assert running_on(lab, name) == [source] and dst.inspect_container(name) is None
    plan = _native.plan_migration(src, dst, {"container": name})
    assert plan["path"]["method"] == "direct", plan
    hosts = {h["provider"]: h for h in (plan["hosts"]["source"], plan["hosts"]["destination"])}
    assert hosts["provider-28"]["engine"].startswith("28.") and hosts["provider-28"]["criu"], hosts
    assert any(line.startswith("  host provider-28: Docker 28.5") for line in plan["lines"]), plan["lines"]
    assert vimigrate.migrate(src, dst, {"container": name})["method"] == "direct"


def test_an_unknown_host_check_to_ignore_is_refused_naming_the_field(lab, name):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-28")
    with pytest.raises(vimigrate.InvalidInputError) as wrong:
        vimigrate.migrate(a, b, {"container": name, "ignore_host_checks": ["gpu"]})
    assert wrong.value.field.startswith("options.ignore_host_checks"), wrong.value.field
    assert "cpu" in str(wrong.value), str(wrong.value)


def _break_busybox(lab, provider: str, name: str) -> None:
    """Replaces busybox (which the counter's shell maps) in `provider`'s copy of the container's
    root filesystem: CRIU then refuses to restore there."""
    [full_id] = docker(lab, provider, "ps", "-a", "--no-trunc", "-q", "--filter", f"name=^/{name}$").split()
    root = root_dir(lab, provider)
    mount = (root / "image/overlay2/layerdb/mounts" / full_id / "mount-id").read_text().strip()
    busybox = root / "overlay2" / mount / "merged/bin/busybox"
    busybox.unlink()
    busybox.write_bytes(b"\x7fELF not busybox")


@pytest.mark.parametrize(("source", "destination"), [("provider-a", "provider-28"), ("provider-28", "provider-a")])
def test_a_restore_failure_resumes_the_source_on_or_off_28(lab, name, source, destination):
    """Towards 28 the failed restore is 28's; from 28 the source resumes there, through the
    runtime (Docker 28's own restore, the usual rollback, is the broken one)."""
    run_counter(lab, name, provider=source, runtime="vimigrate")
    src, dst = connect(lab, source), connect(lab, destination)
    injected = []

    def on_event(event: dict) -> None:
        if event["event"] == "phase" and event["phase"] == "checkpoint" and not injected:
            _break_busybox(lab, destination, name)
            injected.append(True)

    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(src, dst, {"container": name}, on_event)
    err = caught.value
    assert injected and err.phase == "restore" and err.rollback == "resumed", str(err)
    seq = wait_for(lambda: (s := counted(lab, source, name)) and s, what=f"{name} on {source}")
    before = len(seq)
    time.sleep(1.0)
    seq = counted(lab, source, name)
    assert len(seq) > before and consecutive(seq), seq
    assert running_on(lab, name) == [source] and dst.inspect_container(name) is None
    assert helpers(lab, source, name) == [] and helpers(lab, destination, name) == []
    assert checkpoints(lab, source, name) == [], "the checkpoint is deleted once the source runs"


def test_a_corrupted_stream_to_28_is_caught_and_rolled_back(lab, name):
    run_counter(lab, name, runtime="vimigrate")
    a, b = connect(lab, "provider-a"), connect(lab, "provider-28")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": name, "fault": "corrupt_stream"})
    err = caught.value
    assert err.phase == "transfer" and err.rollback == "resumed", str(err)
    assert running_on(lab, name) == ["provider-a"] and b.inspect_container(name) is None


@pytest.mark.parametrize("at", ["prepare", "checkpoint"])
def test_the_broker_killed_on_the_way_from_28_then_heal(lab, name, at):
    run_counter(lab, name, provider="provider-28", runtime="vimigrate")
    kill_cli_migrate_at(start_cli_migrate(lab, name, "provider-28", "provider-a"), at)
    healed = lab_engine.heal(lab, name, ("provider-28", "provider-a"))
    where = wait_for(lambda: running_on(lab, name), timeout=30, what=f"{name} to run somewhere")
    assert where == [healed["runs_on"]], (where, healed)
    before = counted(lab, where[0], name)
    time.sleep(1.5)
    seq = counted(lab, where[0], name)
    assert len(seq) > len(before) and consecutive(seq), seq
    for provider in ("provider-28", "provider-a"):
        assert helpers(lab, provider, name) == [], f"helpers left on {provider}"
        assert container_ids(lab, provider, f"name=^/vimigrate-lock-{name}$") == []
    print(f"observed: killed at {at}; heal: {healed}")


@pytest.mark.parametrize(("source", "destination"), [("provider-a", "provider-28"), ("provider-28", "provider-26"),
                                                     ("provider-a", "provider-28c"), ("provider-28c", "provider-26")])
def test_an_image_only_the_source_has_moves_with_the_container(lab, name, source, destination):
    """An image built on the source (a commit of the counter's image with a layer of its own) is
    streamed to an engine of another version, and runs there as the same image: under the same id
    between graph drivers; to or from containerd's image store (where an id is the manifest's
    digest, which a load rebuilds) with the same layers and configuration. What the container
    wrote into its own layer before the move is there too."""
    base = f"{name}-base"
    docker(lab, source, "run", "--name", base, "--label", MANAGED, lab.images.counter, "sh", "-c",
           f"echo {name} > /built-here")
    image = f"vimigrate-test/{name}:1"
    try:
        docker(lab, source, "commit", base, image)
        content = "{{.Id}} {{json .RootFS.Layers}} {{.Created}} {{json .Config.Cmd}}"
        identity = docker(lab, source, "image", "inspect", "-f", content, image).split(" ", 1)
        run_counter(lab, name, image=image, command=["sh", "-c", FAST_COUNT], provider=source, runtime="vimigrate")
        docker(lab, source, "exec", name, "sh", "-c", f"echo {name}-wrote > /written-before")
        report = vimigrate.migrate(connect(lab, source), connect(lab, destination), {"container": name})
        assert report["method"] == "direct" and report["stats"]["image_bytes"] > 0, report["stats"]
        moved = docker(lab, destination, "image", "inspect", "-f", content, image).split(" ", 1)
        stores = {lab.provider(p).require_versions().image_store for p in (source, destination)}
        if "containerd" not in stores:
            assert moved == identity, (moved, identity)
        else:
            assert moved[1] == identity[1], (moved, identity)
        assert docker(lab, destination, "exec", name, "cat", "/built-here").strip() == name
        assert docker(lab, destination, "exec", name, "cat", "/written-before").strip() == f"{name}-wrote"
        # Moved again, it is found there already (not streamed a second time).
        again = vimigrate.migrate(connect(lab, destination), connect(lab, source), {"container": name})
        assert again["stats"]["image_bytes"] == 0, again["stats"]
        assert docker(lab, source, "exec", name, "cat", "/written-before").strip() == f"{name}-wrote"
        assert running_on(lab, name) == [source]
    finally:
        docker(lab, source, "rm", "-f", base, check=False)
        for provider in (source, destination):
            docker(lab, provider, "rm", "-f", name, check=False)
            docker(lab, provider, "rmi", "-f", image, check=False)
