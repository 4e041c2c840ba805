"""The Python-to-Rust boundary fuzzed where no provider is needed: provider configurations (see
framework/boundary.py; tests/lab/test_fuzz_lab.py fuzzes options and specifications against a
real provider)."""

from __future__ import annotations

import math

import pytest
from framework.boundary import FUZZ, check, mappings, values
from hypothesis import given

import vimigrate


@FUZZ
@given(mappings)
def test_provider_configurations(config):
    check(vimigrate.Provider.connect, config)


@FUZZ
@given(values)
def test_any_value_as_a_provider_configuration(value):
    check(vimigrate.Provider.connect, value)


def test_floats_that_json_cannot_hold_are_refused():
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect({"name": "p", "docker_host": "unix:///x", "timeout_secs": math.nan})
    assert caught.value.field == "provider.timeout_secs"
