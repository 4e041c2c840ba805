"""Every input a user gives the engine that a real provider takes part in refusing (container
and network specifications, migration options, heal), given a wrong type, an empty value or an
unknown reference: a clear error naming the field and what is expected, and nothing changes on
the real providers, Docker 20.10's and Docker 28.5's alike. (Inputs refused before anything is
reached, provider configurations and DNS servers and records: tests/unit/test_bad_input.py.)"""

from __future__ import annotations

import uuid

import pytest
from framework.engine import connect, connect_both, docker

import vimigrate


def _containers(lab, provider: str = "provider-a") -> set[str]:
    return set(docker(lab, provider, "ps", "-aq").split())


def _networks(lab, provider: str) -> set[str]:
    return set(docker(lab, provider, "network", "ls", "-q").split())


@pytest.fixture(params=["provider-a", "provider-28"])
def engine(request) -> str:
    """The provider that refuses: Docker 20.10 or Docker 28.5."""
    return str(request.param)


@pytest.fixture(params=["provider-b", "provider-28"])
def destination(request) -> str:
    """Where a migration from provider-a would go: Docker 20.10 or Docker 28.5."""
    return str(request.param)


@pytest.mark.parametrize(("change", "field"), [
    ({"name": ""}, "name"),
    ({"name": "no spaces"}, "name"),
    ({"name": 7}, "container.name"),
    ({"image": ""}, "image"),
    ({"image": "two words"}, "image"),
    ({"image": None}, "container.image"),
    ({"command": "sh -c x"}, "container.command"),
    ({"env": {"A": 5}}, "container.env.A"),
    ({"env": ["A=1"]}, "container.env"),
    ({"labels": "x"}, "container.labels"),
    ({"ports": [{"container_port": 0}]}, "ports[0].container_port"),
    ({"ports": [{"container_port": "http"}]}, "container.ports[0].container_port"),
    ({"ports": [{"container_port": 80, "protocol": "sctp"}]}, "container.ports[0].protocol"),
    ({"ports": [{"container_port": 80, "host_port": 70000}]}, "container.ports[0].host_port"),
    ({"ports": {"80": 80}}, "container.ports"),
    ({"networks": [{"network": ""}]}, "networks[0].network"),
    ({"networks": [{"network": "vmtest-no-such-network"}]}, "networks[0].network"),
    ({"networks": [{"network": "bridge", "ipv4_address": "not-an-ip"}]}, "networks[0].ipv4_address"),
    ({"volumes": [{"name": "", "destination": "/data"}]}, "volumes[0].name"),
    ({"volumes": [{"name": "v", "destination": "relative"}]}, "volumes[0].destination"),
    ({"hostname": "bad host"}, "hostname"),
    ({"working_dir": "relative"}, "working_dir"),
    ({"colour": "red"}, "container.colour"),
])
def test_container_specification(lab, engine, change, field):
    provider = connect(lab, engine)
    before = _containers(lab, engine)
    spec = {"name": f"vmtest-bad-{uuid.uuid4().hex[:6]}", "image": lab.images.counter, **change}
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        provider.deploy_container(spec)
    assert caught.value.field == field, str(caught.value)
    assert "expected" in str(caught.value)
    assert _containers(lab, engine) == before, "nothing was created"


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": ""}, "name"),
    ({"name": "bad name"}, "name"),
    ({"name": "n", "subnet": "nope"}, "subnet"),
    ({"name": "n", "subnet": "10.0.0.0/33"}, "subnet"),
    ({"name": "n", "subnet": "10.77.0.0/24", "gateway": "10.78.0.1"}, "gateway"),
    ({"name": "n", "gateway": "10.77.0.1"}, "gateway"),
    ({"name": "n", "driver": 5}, "network.driver"),
])
def test_network_specification(lab, engine, spec, field):
    provider = connect(lab, engine)
    before = _networks(lab, engine)
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        provider.ensure_network(spec)
    assert caught.value.field == field, str(caught.value)
    assert _networks(lab, engine) == before, "nothing was created"


@pytest.mark.parametrize(("options", "field"), [
    ({}, "options.container"),
    ({"container": ""}, "container"),
    ({"container": 5}, "options.container"),
    ({"container": "vmtest-no-such-container"}, "container"),
    ({"container": "c", "keep_source": "yes"}, "options.keep_source"),
    ({"container": "c", "verify": 1}, "options.verify"),
    ({"container": "c", "checkpoint_name": "bad/name"}, "checkpoint_name"),
    ({"container": "c", "checkpoint_name": ""}, "checkpoint_name"),
    ({"container": "c", "port_map": {"http": 8080}}, "port_map.http"),
    ({"container": "c", "port_map": {"8080": 0}}, "port_map.8080"),
    ({"container": "c", "port_map": {"8080": "x"}}, "options.port_map.8080"),
    ({"container": "c", "peer_files": "etc/x"}, "options.peer_files"),
    ({"container": "c", "address_map": {"a": 5}}, "options.address_map.a"),
    ({"container": "c", "criu_tcp": "maybe"}, "options.criu_tcp"),
    ({"container": "c", "method": "teleport"}, "options.method"),
    ({"container": "c", "fault": "meteor"}, "options.fault"),
    ({"container": "c", "colour": "red"}, "options.colour"),
])
def test_migration_options(lab, destination, options, field):
    a, b = connect(lab, "provider-a"), connect(lab, destination)
    before = (_containers(lab), _containers(lab, destination))
    with pytest.raises((vimigrate.InvalidInputError, vimigrate.MigrationFailedError)) as caught:
        vimigrate.migrate(a, b, options)
    err = caught.value
    assert err.field == field, str(err)
    if isinstance(err, vimigrate.MigrationFailedError):
        assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    assert (_containers(lab), _containers(lab, destination)) == before


def test_migration_to_the_same_provider_is_refused(lab):
    a = connect(lab, "provider-a")
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, a, {"container": "c"})
    assert caught.value.field == "destination", str(caught.value)


def test_heal_of_an_invalid_or_unknown_container(lab):
    providers = list(connect_both(lab))
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.heal(providers, "bad name")
    assert caught.value.field == "container"
    # Nothing to resume it from is a thing not found (not a provider lacking a capability).
    with pytest.raises(vimigrate.NotFoundError) as nowhere:
        vimigrate.heal(providers, "vmtest-no-such-container")
    assert "runs nowhere" in str(nowhere.value)
