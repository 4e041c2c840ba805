"""Fuzzing the Python-to-Rust boundary (hypothesis, bounded): whatever a caller passes where the
engine expects a configuration, a specification or options, it gets back an answer or one of
vimigrate's own errors (an InvalidInputError naming a field), never a crash, a panic or a
foreign exception. Nothing reaches a network: generated endpoints are rewritten to loopback or
to sockets that do not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
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
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.frozensets(st.integers(), max_size=3), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)
mappings = st.dictionaries(keys, values, max_size=8)

#: Bounded, and without an example database: the unit layer runs where it may not write one.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def confine(value: Any) -> Any:
    """No generated endpoint may leave the machine: any tcp:// goes to a closed loopback port."""
    if isinstance(value, str) and ("://" in value or value.count(".") >= 3):
        return "tcp://127.0.0.1:9" if value.startswith("tcp") else "unix:///nonexistent/docker.sock"
    if isinstance(value, dict):
        return {k: confine(v) for k, v in value.items()}
    if isinstance(value, list):
        return [confine(v) for v in value]
    return value


def check(call: Callable[[Any], object], value: Any) -> None:
    """`call(value)` answers or raises one of vimigrate's errors, nothing else."""
    try:
        call(confine(value))
    except vimigrate.InvalidInputError as err:
        assert isinstance(err.field, str) and err.field, repr(err)
        assert "expected" in str(err)
    except vimigrate.VimigrateError:
        pass  # unreachable endpoints and the like: the engine's own classes
    except BaseException as err:  # noqa: BLE001 - the point: nothing else may come out
        pytest.fail(f"{type(err).__name__} from {value!r}: {err}")
