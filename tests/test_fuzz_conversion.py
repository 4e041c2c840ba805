"""Fuzzing the Python-to-Rust boundary (hypothesis, bounded): whatever a caller passes where the
engine expects a configuration, a specification or options, it gets back an answer or one of
vimigrate's own errors (an InvalidInputError naming a field), never a crash, a panic or a
foreign exception. Nothing here reaches a network: generated endpoints are rewritten to
loopback or to sockets that do not exist."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vimigrate

FIELDS = ["name", "docker_host", "tls", "ca", "cert", "key", "allow_plain_tcp", "timeout_secs", "public_address",
          "transfer_address", "transfer_port", "container", "keep_source", "verify", "check_criu",
          "checkpoint_name", "port_map", "address_map", "peer_files", "criu_tcp", "method", "fault", "image",
          "command", "env", "ports", "container_port", "host_port", "protocol", "networks", "network", "volumes",
          "destination", "subnet", "gateway", "labels"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.binary(max_size=8),
    st.sampled_from(["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:9", "", "auto", "direct", "tcp", "0.0.0.0"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12), st.integers(0, 3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.frozensets(st.integers(), max_size=3),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


def confine(value):
    """No generated endpoint may leave the machine: any tcp:// goes to a closed loopback port."""
    if isinstance(value, str) and ("://" in value or value.count(".") >= 3):
        return "tcp://127.0.0.1:9" if value.startswith("tcp") else "unix:///nonexistent/docker.sock"
    if isinstance(value, dict):
        return {k: confine(v) for k, v in value.items()}
    if isinstance(value, list):
        return [confine(v) for v in value]
    return value


def check(call, value):
    try:
        call(confine(value))
    except vimigrate.InvalidInputError as err:
        assert isinstance(err.field, str) and err.field, repr(err)
        assert "expected" in str(err)
    except vimigrate.VimigrateError:
        pass  # unreachable endpoints and the like: the engine's own classes
    except BaseException as err:  # noqa: BLE001 - the point: nothing else may come out
        pytest.fail(f"{type(err).__name__} from {value!r}: {err}")


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.dictionaries(keys, values, max_size=8))
def test_provider_configurations(config):
    check(vimigrate.Provider.connect, config)


@FUZZ
@given(values)
def test_any_value_as_a_provider_configuration(value):
    check(vimigrate.Provider.connect, value)


@pytest.fixture(scope="module")
def provider(lab):
    facts = lab["providers"]["provider-a"]
    return vimigrate.Provider.connect({"name": "provider-a", "docker_host": facts["docker_host"]})


@pytest.mark.lab
def test_migration_options(provider):
    # Source and destination the same provider: whatever the options, nothing can move.
    @FUZZ
    @given(st.dictionaries(keys, values, max_size=8))
    def fuzz(options):
        check(lambda o: vimigrate.migrate(provider, provider, o), options)

    fuzz()


@pytest.mark.lab
def test_container_and_network_specifications(provider, lab):
    from conftest import docker

    before = set(docker(lab, "provider-a", "ps", "-aq").split())

    # Names that cannot exist there: a generated spec may be valid, its image never is.
    @FUZZ
    @given(st.dictionaries(keys, values, max_size=8))
    def fuzz(spec):
        spec = confine(spec)
        if isinstance(spec.get("image"), str):
            spec["image"] = "vmfuzz/none:absent"
        check(provider.deploy_container, spec)
        if isinstance(spec.get("name"), str):
            spec["name"] = "vmfuzz-" + spec["name"]
        check(provider.ensure_network, spec)

    fuzz()
    after = set(docker(lab, "provider-a", "ps", "-aq").split())
    assert after == before, "fuzzing created a container"
    for network in docker(lab, "provider-a", "network", "ls", "--format", "{{.Name}}").split():
        if network.startswith("vmfuzz-"):
            docker(lab, "provider-a", "network", "rm", network, check=False)


def test_floats_that_json_cannot_hold_are_refused():
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect({"name": "p", "docker_host": "unix:///x", "timeout_secs": math.nan})
    assert caught.value.field == "provider.timeout_secs"
