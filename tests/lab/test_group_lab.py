"""A whole virtual infrastructure under one freeze, on the lab's real providers: a three-tier VI
(a web server, its Redis, and a worker holding one connection to Redis) moved as a group there
and back, with kept addresses and across a remapped subnet; the worker's connection keeps its
identity in Redis's CLIENT LIST either way, the keys and both counters are intact; a member
failing at its restore resumes the whole group on the source."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
from framework.engine import MANAGED, cli_migrate, connect, docker, heal
from framework.lab import ROOT
from framework.process import wait_for
from framework.workloads import redis, visits_at, wait_for_redis, web_stats

import vimigrate

WORKER_KEY = "worker:count"

#: A broker that moves the three tiers (argv: source and destination docker hosts, the
#: three names) with the web server's restore failing on purpose, printing the phases as the
#: CLI does so that the test can kill it at one.
SPLIT_BROKER = """
import sys, vimigrate
src = vimigrate.Provider.connect({"name": "provider-a", "docker_host": sys.argv[1]})
dst = vimigrate.Provider.connect({"name": "provider-b", "docker_host": sys.argv[2]})
members = [(src, {"container": n}) for n in sys.argv[3:6]]
members[1][1]["fault"] = "fail_restore"
def show(e):
    if e["event"] == "phase":
        print(f"{e['container']}: {e['phase']}...", file=sys.stderr, flush=True)
vimigrate.migrate_group(dst, members, show)
"""


@pytest.fixture
def vi(lab):
    """Names of a three-tier VI on a network of its own subnet; everything removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    third = random.randint(100, 250)
    names = {"net": f"vmgroup-net-{tag}", "redis": f"vmgroup-redis-{tag}", "web": f"vmgroup-web-{tag}",
             "worker": f"vmgroup-worker-{tag}", "subnet": f"172.27.{third}.0/24", "web_port": 17000 + third,
             "redis_port": 18000 + third, "blocker": f"vmgroup-block-{tag}"}
    yield names
    for provider in ("provider-a", "provider-b"):
        docker(lab, provider, "rm", "-f", names["web"], names["redis"], names["worker"], check=False)
        docker(lab, provider, "network", "rm", names["net"], names["blocker"], check=False)


def start_vi(lab, vi, runtime: str = "vimigrate", keys: int = 1000, worker_mib: int = 0) -> list[tuple[str, str]]:
    """The three tiers on provider-a under `runtime` (vimigrate: the direct path; runc: Docker's
    checkpoint API): Redis (published, holding `keys` keys), the web server and the worker, both
    reaching Redis by name; returns the keys."""
    run = ["run", "-d", "--network", vi["net"], "--label", MANAGED, "--runtime", runtime]
    docker(lab, "provider-a", "network", "create", "--subnet", vi["subnet"], "--label", MANAGED, vi["net"])
    docker(lab, "provider-a", *run, "--name", vi["redis"], "--network-alias", "redis",
           "-p", f"{vi['redis_port']}:6379", lab.images.redis)
    wait_for_redis(lab.a.public_address, vi["redis_port"], "redis on A")
    pairs = [(f"key:{i}", uuid.uuid4().hex) for i in range(keys)]
    assert set(redis(lab.a.public_address, vi["redis_port"], [["SET", k, v] for k, v in pairs])) == {b"+OK"}
    docker(lab, "provider-a", *run, "--name", vi["web"], "-p", f"{vi['web_port']}:8080",
           "-e", "REDIS_ADDR=redis:6379", lab.images.web)
    docker(lab, "provider-a", *run, "--name", vi["worker"], "-e", "REDIS_ADDR=redis:6379",
           "-e", f"WORKER_KEY={WORKER_KEY}", "-e", f"MEM_MIB={worker_mib}", lab.images.web)
    wait_for(lambda: worker(lab.a.public_address, vi["redis_port"]) is not None, what="the worker's connection")
    return pairs


def worker(address: str, port: int) -> dict[str, str] | None:
    """The worker's entry of Redis's CLIENT LIST (id, addr, ...), None while it has none."""
    listing = redis(address, port, [["CLIENT", "LIST"]])[0].decode()
    for line in listing.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == "worker":
            return fields
    return None


def count(address: str, port: int) -> int:
    return int(redis(address, port, [["GET", WORKER_KEY]])[0] or b"0")


def assert_holds(address: str, port: int, pairs: list[tuple[str, str]]) -> None:
    wait_for_redis(address, port, f"redis at {address}")
    assert redis(address, port, [["GET", k] for k, _ in pairs]) == [v.encode() for _, v in pairs]


def members(source: vimigrate.Provider, vi, **options) -> list[tuple[vimigrate.Provider, dict]]:
    return [(source, {"container": vi[n], **options}) for n in ("redis", "web", "worker")]


def move(lab, vi, source: str, destination: str, connections: bool = True) -> dict:
    """The group from `source` to `destination`, checked: every member runs there, both counters
    went on, and (`connections`) the worker's connection and the web server's kept their
    identity."""
    src, dst = connect(lab, source), connect(lab, destination)
    at_src, at_dst = lab.provider(source).public_address, lab.provider(destination).public_address
    before = worker(at_src, vi["redis_port"])
    assert before is not None
    visits = visits_at(at_src, vi["web_port"])
    counted = count(at_src, vi["redis_port"])
    web_before = web_stats(at_src, vi["web_port"])
    report = vimigrate.migrate_group(dst, members(src, vi))
    stats = report["stats"]
    print(f"observed: group {source} -> {destination}: downtime {stats['downtime_ms']} ms, longest member "
          f"{stats['longest_member_downtime_ms']} ms, freezes within {stats['freeze_spread_ms']:.2f} ms "
          f"(dumps within {stats['dump_spread_ms']} ms by the hosts' clocks), total {stats['total_ms']} ms; "
          f"addresses {report['address_changes']}")
    assert [m["destination"] for m in report["members"]] == [destination] * 3
    assert stats["members"] == 3 and stats["downtime_ms"] >= stats["longest_member_downtime_ms"] > 0
    assert stats["freeze_spread_ms"] < 50, f"the freezes started together: {stats}"
    for name in ("redis", "web", "worker"):
        assert docker(lab, destination, "inspect", "-f", "{{.State.Running}}", vi[name]).strip() == "true"
        assert docker(lab, source, "ps", "-aq", "-f", f"name=^/{vi[name]}$").strip() == "", f"{name} left on {source}"
    wait_for(lambda: count(at_dst, vi["redis_port"]) > counted, what="the worker counting on")
    after = worker(at_dst, vi["redis_port"])
    assert after is not None
    assert visits_at(at_dst, vi["web_port"]) == visits + 1
    web_after = web_stats(at_dst, vi["web_port"])
    print(f"observed: worker {before['id']} -> {after['id']}, web connects {web_before['redis_connects']} -> "
          f"{web_after['redis_connects']}")
    if connections:
        assert after["id"] == before["id"], f"the worker reconnected: {before} -> {after}"
        assert web_after["redis_connects"] == web_before["redis_connects"], f"the web server reconnected: {web_after}"
    return report


@pytest.mark.parametrize("runtime", ["vimigrate", "runc"])
def test_the_three_tiers_move_as_one_group_there_and_back_with_kept_addresses(lab, vi, runtime):
    """By the direct path, and by Docker's checkpoint API (whose TCP option lives in the hosts'
    CRIU file: the group sets it once and puts it back as found)."""
    conf = docker(lab, "provider-a", "info", "-f", "{{.ID}}")  # the daemon answers
    assert conf
    pairs = start_vi(lab, vi, runtime)
    # Docker's own restore gives the namespaces no inbound hold (see net/inbound_hold.rs): a
    # member restored first can be reset by a peer still restoring (seen once in CI), so the
    # connections are only required to survive on the direct path.
    direct = runtime == "vimigrate"
    there = move(lab, vi, "provider-a", "provider-b", connections=direct)
    method = "direct" if runtime == "vimigrate" else "docker"
    for member in there["members"]:
        assert member["criu_tcp_option"] == "tcp-established" and member["address_changes"] == {}, member
        assert member["method"] == method, member["method_reason"]
    assert_holds(lab.b.public_address, vi["redis_port"], pairs)
    # Back by the direct path either way: the containers run under vimigrate-runtime on B.
    move(lab, vi, "provider-b", "provider-a")
    assert_holds(lab.a.public_address, vi["redis_port"], pairs)


def test_the_group_keeps_its_connections_across_a_remapped_subnet(lab, vi):
    """provider-b holds the VI's subnet: the group gets a new one there, each member its host
    part in it, and the connections between members follow (their sockets rewritten on both
    ends); back on provider-a, the original addresses again."""
    pairs = start_vi(lab, vi)
    docker(lab, "provider-b", "network", "create", "--subnet", vi["subnet"], vi["blocker"])
    a = connect(lab, "provider-a")
    old = {n: a.inspect_container(vi[n])["addresses"][vi["net"]] for n in ("redis", "web", "worker")}
    there = move(lab, vi, "provider-a", "provider-b")
    new = {n: connect(lab, "provider-b").inspect_container(vi[n])["addresses"][vi["net"]]
           for n in ("redis", "web", "worker")}
    assert there["address_changes"] == {old[n]: new[n] for n in old}, there["address_changes"]
    for name in old:
        assert old[name].split(".")[3] == new[name].split(".")[3], f"{name} kept its host part: {old} -> {new}"
    for member in there["members"]:
        assert member["criu_tcp_option"] == "tcp-established", member
        assert member["networks"][0]["mode"] == "remap", member["networks"]
    kept = {m["container"]: m["stats"]["sockets_kept"] for m in there["members"]}
    assert kept[vi["redis"]] >= 2 and kept[vi["web"]] >= 1 and kept[vi["worker"]] >= 1, kept
    assert_holds(lab.b.public_address, vi["redis_port"], pairs)
    docker(lab, "provider-b", "network", "rm", vi["blocker"])
    back = move(lab, vi, "provider-b", "provider-a")
    assert back["address_changes"] == {new[n]: old[n] for n in old}, back["address_changes"]


def test_a_member_failing_at_its_restore_resumes_the_whole_group_on_the_source(lab, vi):
    pairs = start_vi(lab, vi)
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    at_a = lab.a.public_address
    before = worker(at_a, vi["redis_port"])
    counted = count(at_a, vi["redis_port"])
    visits = visits_at(at_a, vi["web_port"])
    group = members(a, vi)
    group[1][1]["fault"] = "fail_restore"
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate_group(b, group)
    err = caught.value
    print(f"observed: {err}")
    assert err.phase == "restore" and vi["web"] in str(err) and "fail_restore" in str(err), str(err)
    assert err.rollback == "resumed", str(err)
    assert [m["rollback"] for m in err.members] == ["resumed"] * 3, err.members
    for name in ("redis", "web", "worker"):
        assert docker(lab, "provider-a", "inspect", "-f", "{{.State.Running}}", vi[name]).strip() == "true"
        assert docker(lab, "provider-b", "ps", "-aq", "-f", f"name=^/{vi[name]}$").strip() == "", name
        assert docker(lab, "provider-a", "checkpoint", "ls", vi[name]).strip().splitlines()[1:] == [], name
    assert docker(lab, "provider-b", "network", "ls", "-q", "-f", f"name=^{vi['net']}$").strip() == ""
    wait_for(lambda: count(at_a, vi["redis_port"]) > counted, what="the worker counting on")
    after = worker(at_a, vi["redis_port"])
    assert after is not None and after["id"] == before["id"], f"the worker's connection survived: {after}"
    assert visits_at(at_a, vi["web_port"]) == visits + 1
    assert_holds(at_a, vi["redis_port"], pairs)
    # Nothing was left locked: the group moves now.
    time.sleep(0.5)
    assert len(vimigrate.migrate_group(b, members(a, vi))["members"]) == 3


def test_bad_group_input_is_refused_naming_the_member(lab, vi):
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    with pytest.raises(vimigrate.InvalidInputError) as empty:
        vimigrate.migrate_group(b, [])
    assert empty.value.field == "members", str(empty.value)
    twice = [(a, {"container": "x"}), (a, {"container": "x"})]
    with pytest.raises(vimigrate.InvalidInputError) as dup:
        vimigrate.migrate_group(b, twice)
    assert dup.value.field == "members[1].container", str(dup.value)
    with pytest.raises(vimigrate.InvalidInputError) as post:
        vimigrate.migrate_group(b, [(a, {"container": "x", "memory": "post-copy"})])
    assert post.value.field == "members[0].memory" and "post-copy" in str(post.value), str(post.value)


@pytest.mark.parametrize("at", ["prepare", "checkpoint", "transfer", "split"])
def test_the_broker_killed_at_the_gate_then_heal_settles_the_group(lab, vi, at):
    """`vimigrate migrate` of the three tiers, killed once a member announces `at` (before the
    gate, at it, or once a member's dump went: the hosts finish the moves on their own). With
    `split`, the web server's restore also fails on provider-b after the broker died at the gate
    (nobody rolls back): Docker never ran the others' restored starts either (their calls died
    with the broker), so heal resumes every member on the source from its own dump. Heal of any
    member settles the group: each member on exactly one provider, all on the same one, state
    intact."""
    pairs = start_vi(lab, vi)
    kill_at = "transfer" if at == "split" else at
    counted = count(lab.a.public_address, vi["redis_port"])
    if at == "split":
        # A broker of its own, to inject the web server's restore failure.
        cmd = [sys.executable, "-c", SPLIT_BROKER, lab.a.docker_host, lab.b.docker_host,
               vi["redis"], vi["web"], vi["worker"]]
    else:
        cmd = cli_migrate(lab, vi["redis"])
        cmd[cmd.index(vi["redis"]) + 1:cmd.index(vi["redis"]) + 1] = [vi["web"], vi["worker"]]
    broker = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert broker.stderr is not None
    for line in broker.stderr:
        if line.rstrip().endswith(f": {kill_at}..."):
            broker.kill()
            break
    broker.wait(timeout=30)
    assert broker.returncode == -signal.SIGKILL, f"the broker was killed at {at}"
    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    with pytest.raises(vimigrate.MigrationFailedError) as refused:
        vimigrate.migrate_group(b, members(a, vi))
    assert refused.value.phase == "preflight" and "run heal" in str(refused.value), str(refused.value)
    healed = heal(lab, vi["web"])
    print(f"observed: killed at {at}; heal: {healed}")
    assert sorted(healed["group"]) == sorted(vi[n] for n in ("redis", "web", "worker")), healed
    where = healed["runs_on"]
    if at == "split":
        assert where == "provider-a" and healed["resumed"], healed
    for name in ("redis", "web", "worker"):
        again = heal(lab, vi[name])
        assert again["runs_on"] == where and again["group"] == [], f"{name}: {again}"
        running = [p for p in ("provider-a", "provider-b")
                   if docker(lab, p, "ps", "-q", "-f", f"name=^/{vi[name]}$").strip()]
        assert running == [where], f"{name} runs on {running}, the group on {where}"
    at_where = lab.provider(where).public_address
    assert_holds(at_where, vi["redis_port"], pairs)
    wait_for(lambda: count(at_where, vi["redis_port"]) > counted, what="the worker counting on")
    assert visits_at(at_where, vi["web_port"]) >= 1
    # Settled: the group moves again.
    other = "provider-b" if where == "provider-a" else "provider-a"
    assert len(vimigrate.migrate_group(connect(lab, other), members(connect(lab, where), vi))["members"]) == 3
