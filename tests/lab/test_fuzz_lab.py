"""The Python-to-Rust boundary fuzzed against a real provider (see framework/boundary.py):
migration options, container and network specifications."""

from __future__ import annotations

import pytest
from framework.boundary import FUZZ, check, confine, mappings
from framework.engine import connect, docker
from hypothesis import given

import vimigrate


@pytest.fixture(scope="module")
def provider(lab):
    return connect(lab, "provider-a")


def test_migration_options(provider):
    # Source and destination the same provider: whatever the options, nothing can move.
    @FUZZ
    @given(mappings)
    def fuzz(options):
        check(lambda o: vimigrate.migrate(provider, provider, o), options)

    fuzz()


def test_container_and_network_specifications(provider, lab):
    before = set(docker(lab, "provider-a", "ps", "-aq").split())

    # Names that cannot exist there: a generated spec may be valid, its image never is.
    @FUZZ
    @given(mappings)
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
