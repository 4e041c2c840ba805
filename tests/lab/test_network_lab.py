"""The virtual network after a move, on the lab's real providers: a web server and its Redis
move together; addresses are kept where the destination has the subnet free (and their open
connection survives), remapped where it does not (names still resolve, declared config files
are rewritten)."""

from __future__ import annotations

import random
import uuid

import pytest
from framework.engine import MANAGED, connect, connect_both, docker
from framework.workloads import visits_at, web_stats

import vimigrate


@pytest.fixture
def vi(lab):
    """A web server and its Redis on a user-defined network of provider-a with its own subnet;
    everything removed from both providers afterwards."""
    tag = uuid.uuid4().hex[:6]
    third = random.randint(100, 250)
    names = {"net": f"vmtest-net-{tag}", "redis": f"vmtest-redis-{tag}", "web": f"vmtest-web-{tag}",
             "subnet": f"172.28.{third}.0/24", "port": 17000 + third, "blocker": f"vmtest-block-{tag}"}
    yield names
    for provider in ("provider-a", "provider-b", "provider-28", "provider-28c"):
        docker(lab, provider, "rm", "-f", names["web"], names["redis"], check=False)
        docker(lab, provider, "network", "rm", names["net"], names["blocker"], check=False)


def start_network_and_redis(lab, vi, *redis_args: str, on: str = "provider-a") -> None:
    """The VI's network on provider `on`, with its own subnet, and Redis on it."""
    docker(lab, on, "network", "create", "--subnet", vi["subnet"], "--label", MANAGED, vi["net"])
    docker(lab, on, "run", "-d", "--name", vi["redis"], "--network", vi["net"], *redis_args,
           "--label", MANAGED, lab.images.redis)


def start_vi(lab, vi, runtime: str = "runc", on: str = "provider-a"):
    """The web server and its Redis (by name: redis:6379) on the VI's network of provider `on`,
    under `runtime` (Docker 28 restores only through vimigrate's)."""
    start_network_and_redis(lab, vi, "--network-alias", "redis", "--runtime", runtime, on=on)
    docker(lab, on, "run", "-d", "--name", vi["web"], "--network", vi["net"], "-p", f"{vi['port']}:8080",
           "--runtime", runtime, "--label", MANAGED, "-e", "REDIS_ADDR=redis:6379", lab.images.web)


#: Where the subnet tests move to: the twin 20.10 (by Docker's path: the containers run under
#: runc), and Docker 28 with containerd 2.1 (by the direct path, the only one that restores there).
DESTINATIONS = pytest.mark.parametrize("destination", ["provider-b", "provider-28"])


def runtime_for(destination: str) -> str:
    return "vimigrate" if destination.startswith("provider-28") else "runc"


@pytest.mark.parametrize("destination", ["provider-b", "provider-28", "provider-28c"])
def test_kept_subnet_keeps_addresses_and_the_open_connection(lab, vi, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination)
    start_vi(lab, vi, runtime_for(destination))
    address_a, address_b = lab.a.public_address, lab.provider(destination).public_address
    first = visits_at(address_a, vi["port"])
    before = web_stats(address_a, vi["port"])
    assert before["redis_connects"] == 1
    ips_before = {n: a.inspect_container(vi[n])["addresses"][vi["net"]] for n in ("redis", "web")}

    moved_redis = vimigrate.migrate(a, b, {"container": vi["redis"]})
    moved_web = vimigrate.migrate(a, b, {"container": vi["web"]})

    # Docker 28 wires the network only after the direct path's restore: the runtime holds the
    # sockets' addresses meanwhile, so the connection survives there as well.
    for report in (moved_redis, moved_web):
        assert report["networks"][0]["mode"] == "preserve", report["networks"]
        assert report["address_changes"] == {}
        assert report["criu_tcp_option"] == "tcp-established", report["tcp_reason"]
    assert {n: b.inspect_container(vi[n])["addresses"][vi["net"]] for n in ("redis", "web")} == ips_before
    assert visits_at(address_b, vi["port"]) == first + 1
    after = web_stats(address_b, vi["port"])
    assert after["redis_connects"] == 1, f"the web server reconnected: {after}"
    assert after["redis_peer"] == before["redis_peer"]
    if destination.startswith("provider-28"):
        held = [r["stats"]["addresses_held"] for r in (moved_redis, moved_web)]
        assert held == [1, 1], f"each restore held its container's address: {held}"


def test_the_open_connection_survives_a_rollback_on_docker_28_and_the_move_off_it(lab, vi):
    """Docker 28 as the source: a rollback there restores Redis into a namespace Docker wires only
    afterwards (the runtime holds the address meanwhile), and the move to 20.10 keeps the
    connection too."""
    c28, a = connect(lab, "provider-28"), connect(lab, "provider-a")
    start_vi(lab, vi, "vimigrate", on="provider-28")
    address_28, address_a = lab.provider("provider-28").public_address, lab.a.public_address
    first = visits_at(address_28, vi["port"])
    before = web_stats(address_28, vi["port"])
    assert before["redis_connects"] == 1

    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(c28, a, {"container": vi["redis"], "fault": "corrupt_stream"})
    assert "arrived corrupted" in str(caught.value), str(caught.value)
    assert a.inspect_container(vi["redis"]) is None
    assert visits_at(address_28, vi["port"]) == first + 1
    assert web_stats(address_28, vi["port"])["redis_connects"] == 1, "the rollback kept the connection"

    moved = [vimigrate.migrate(c28, a, {"container": vi[n]}) for n in ("redis", "web")]
    assert [m["criu_tcp_option"] for m in moved] == ["tcp-established"] * 2
    assert visits_at(address_a, vi["port"]) == first + 2
    after = web_stats(address_a, vi["port"])
    assert after["redis_connects"] == 1 and after["redis_peer"] == before["redis_peer"], after


@DESTINATIONS
def test_taken_subnet_remaps_and_names_still_resolve(lab, vi, destination):
    a, b = connect(lab, "provider-a"), connect(lab, destination)
    start_vi(lab, vi, runtime_for(destination))
    docker(lab, destination, "network", "create", "--subnet", vi["subnet"], vi["blocker"])
    address_a, address_b = lab.a.public_address, lab.provider(destination).public_address
    first = visits_at(address_a, vi["port"])

    moved_redis = vimigrate.migrate(a, b, {"container": vi["redis"]})
    moved_web = vimigrate.migrate(a, b, {"container": vi["web"]})

    assert moved_redis["networks"][0]["mode"] == "remap"
    assert "taken there by network" in moved_redis["networks"][0]["reason"]
    assert moved_redis["criu_tcp_option"] == "tcp-close"
    assert len(moved_redis["address_changes"]) == 1 and len(moved_web["address_changes"]) == 1
    subnet_b = b.inspect_network(vi["net"])["subnets"][0]
    assert subnet_b != vi["subnet"]
    assert visits_at(address_b, vi["port"]) == first + 1, "the web server reaches Redis by name on B"


def test_declared_config_file_is_rewritten_and_the_reader_follows(lab, vi):
    a, b = connect_both(lab)
    start_network_and_redis(lab, vi)
    redis_ip = a.inspect_container(vi["redis"])["addresses"][vi["net"]]
    script = ("mkdir -p /etc/web && echo redis=$REDIS_IP:6379 > /etc/web/web.conf "
              "&& exec /usr/local/bin/vimigrate-labapp")
    docker(lab, "provider-a", "run", "-d", "--name", vi["web"], "--network", vi["net"], "-p", f"{vi['port']}:8080",
           "--label", MANAGED, "-e", f"REDIS_IP={redis_ip}", "--entrypoint", "sh", lab.images.web, "-c", script)
    docker(lab, "provider-b", "network", "create", "--subnet", vi["subnet"], vi["blocker"])
    address_a, address_b = lab.a.public_address, lab.b.public_address
    first = visits_at(address_a, vi["port"])
    assert web_stats(address_a, vi["port"])["redis_addr"] == f"{redis_ip}:6379"

    moved_redis = vimigrate.migrate(a, b, {"container": vi["redis"]})
    [(old, new)] = moved_redis["address_changes"].items()
    assert old == redis_ip and new != redis_ip
    moved_web = vimigrate.migrate(a, b, {"container": vi["web"], "address_map": moved_redis["address_changes"],
                                         "peer_files": ["/etc/web/web.conf"]})
    assert moved_web["rewrites"] == [("/etc/web/web.conf", 1)] or moved_web["rewrites"] == [["/etc/web/web.conf", 1]]
    assert docker(lab, "provider-b", "exec", vi["web"], "cat", "/etc/web/web.conf").strip() == f"redis={new}:6379"
    # The environment held the old address too: rewritten the same way.
    assert f"REDIS_IP={new}" in docker(lab, "provider-b", "inspect", "-f", "{{.Config.Env}}", vi["web"])
    assert visits_at(address_b, vi["port"]) == first + 1
    assert web_stats(address_b, vi["port"])["redis_addr"] == f"{new}:6379", "the reader reconnected to the new address"


def test_dry_plan_of_a_missing_peer_file_is_refused_before_anything_changes(lab, vi):
    a, b = connect_both(lab)
    start_vi(lab, vi)
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, b, {"container": vi["web"], "peer_files": ["/etc/nope.conf"]})
    assert caught.value.phase == "preflight" and caught.value.field == "peer_files[0]"
    assert b.inspect_container(vi["web"]) is None
