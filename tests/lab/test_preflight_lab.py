"""Preflight against a destination that cannot restore: CRIU unusable there (provider-nocriu, a
lab dockerd whose PATH holds no criu) or experimental mode off. The migration must fail in
preflight, before anything changes: the service keeps running on the source without a gap, and
the destination is left without any container (the engine's CRIU probe cleans up after itself)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from framework import lab as lab_view
from framework.engine import connect, docker, docker_at
from framework.process import run
from framework.workloads import consecutive, count_on, run_counter

import vimigrate


@pytest.fixture(scope="module")
def nocriu(lab):
    """provider-nocriu's facts, started for this module and stopped after it."""
    yield lab_view.nocriu_up()
    lab_view.nocriu_down()


@pytest.fixture
def counter(lab):
    """A counter running on provider-a, removed afterwards whatever happened."""
    name = f"vmtest-pre-{uuid.uuid4().hex[:8]}"
    run_counter(lab, name)
    yield name
    docker(lab, "provider-a", "rm", "-f", name, check=False)


def assert_untouched(lab, nocriu: lab_view.NocriuFacts, name: str) -> None:
    """The counter still runs on A and counts without a gap; the destination holds no container."""
    assert json.loads(docker(lab, "provider-a", "inspect", "-f", "{{json .State.Running}}", name)) is True
    before, after = count_on(lab, "provider-a", name)
    assert len(after) > len(before), "the counter goes on counting on A"
    assert consecutive(after), f"a gap or a restart on A: {after}"
    assert after[0] == 0, "the same process since the start (never restarted)"
    assert docker_at(nocriu.docker_host, "ps", "-aq").split() == [], "no container left on the destination"


def test_provider_nocriu_has_no_criu_in_its_path(nocriu):
    assert nocriu.experimental is True
    found = run(["sh", "-c", "command -v criu"], env={"PATH": nocriu.path})
    assert found.returncode != 0, f"criu found in provider-nocriu's PATH: {found.stdout}"
    environ = Path(f"/proc/{nocriu.pid}/environ").read_bytes().split(b"\0")
    assert f"PATH={nocriu.path}".encode() in environ, "dockerd (and so runc) runs with that PATH"


def refused_in_preflight(lab, destination: lab_view.NocriuFacts, counter: str) -> str:
    """Migrates the counter to `destination`, which must refuse it in preflight, before anything
    changed; the error's message."""
    a, dst = connect(lab, "provider-a"), vimigrate.Provider.connect(destination.config(timeout_secs=60))
    assert dst.probe()["experimental"] is destination.experimental
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, dst, {"container": counter})
    err = caught.value
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", str(err)
    return str(err)


def test_criu_unusable_on_the_destination_fails_in_preflight_and_changes_nothing(lab, nocriu, counter):
    message = refused_in_preflight(lab, nocriu, counter)
    assert "provider-nocriu" in message and "CRIU" in message, message
    # Why, in runc's words: the daemon found no criu to run.
    assert '"criu": executable file not found' in message, message
    assert "nothing was changed" in message, message
    assert_untouched(lab, nocriu, counter)


def test_destination_without_experimental_mode_fails_in_preflight(lab, nocriu, counter):
    # Restarts provider-nocriu without --experimental for this test, and back afterwards.
    plain = lab_view.nocriu_up("--no-experimental")
    try:
        assert plain.experimental is False
        message = refused_in_preflight(lab, plain, counter)
        assert "provider-nocriu" in message and "experimental" in message, message
        assert_untouched(lab, plain, counter)
    finally:
        lab_view.nocriu_up()
