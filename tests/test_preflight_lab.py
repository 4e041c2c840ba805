"""Preflight against a destination that cannot restore: CRIU unusable there (provider-nocriu, a
lab dockerd whose PATH holds no criu) or experimental mode off. The migration must fail in
preflight, before anything changes: the service keeps running on the source without a gap, and
the destination is left without any container (the engine's CRIU probe cleans up after itself)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

import vimigrate
from conftest import ROOT, docker_at, numbers, run, wait_for

pytestmark = pytest.mark.lab

NOCRIU_SCRIPT = ROOT / "scripts/lab/provider-nocriu.sh"
NOCRIU_JSON = ROOT / ".lab/provider-nocriu.json"


def nocriu_up(*flags: str) -> dict:
    result = run(["bash", str(NOCRIU_SCRIPT), "up", *flags], timeout=180)
    assert result.returncode == 0, f"provider-nocriu.sh up {' '.join(flags)}: {result.stdout}{result.stderr}"
    return json.loads(NOCRIU_JSON.read_text())


@pytest.fixture(scope="module")
def nocriu(lab: dict):
    """provider-nocriu's facts, started for this module and stopped after it."""
    yield nocriu_up()
    result = run(["bash", str(NOCRIU_SCRIPT), "down"], timeout=180)
    assert result.returncode == 0, f"provider-nocriu.sh down: {result.stdout}{result.stderr}"




def connect(facts: dict) -> vimigrate.Provider:
    return vimigrate.Provider.connect({"name": facts["name"], "docker_host": facts["docker_host"],
                                       "public_address": facts["public_address"], "timeout_secs": 60})






@pytest.fixture
def counter(lab: dict):
    """A counter running on provider-a, removed afterwards whatever happened."""
    host = lab["providers"]["provider-a"]["docker_host"]
    name = f"vmtest-pre-{uuid.uuid4().hex[:8]}"
    docker_at(host, "run", "-d", "--name", name, "--label", "io.vimigrate.managed=true", lab["images"]["counter"])
    wait_for(lambda: len(numbers(docker_at(host, "logs", name))) >= 3, what="the counter on provider-a")
    yield name
    docker_at(host, "rm", "-f", name, check=False)


def assert_untouched(lab: dict, nocriu: dict, name: str) -> None:
    """The counter still runs on A and counts without a gap; the destination holds no container."""
    host = lab["providers"]["provider-a"]["docker_host"]
    assert json.loads(docker_at(host, "inspect", "-f", "{{json .State.Running}}", name)) is True
    before = numbers(docker_at(host, "logs", name))
    time.sleep(2.5)
    after = numbers(docker_at(host, "logs", name))
    assert len(after) > len(before), "the counter goes on counting on A"
    assert after == list(range(after[0], after[0] + len(after))), f"a gap or a restart on A: {after}"
    assert after[0] == 0, "the same process since the start (never restarted)"
    assert docker_at(nocriu["docker_host"], "ps", "-aq").split() == [], "no container left on the destination"


def test_provider_nocriu_has_no_criu_in_its_path(nocriu):
    assert nocriu["experimental"] is True
    found = run(["sh", "-c", "command -v criu"], env={"PATH": nocriu["path"]})
    assert found.returncode != 0, f"criu found in provider-nocriu's PATH: {found.stdout}"
    environ = open(f"/proc/{nocriu['pid']}/environ", "rb").read().split(b"\0")
    assert f"PATH={nocriu['path']}".encode() in environ, "dockerd (and so runc) runs with that PATH"


def test_criu_unusable_on_the_destination_fails_in_preflight_and_changes_nothing(lab, nocriu, counter):
    a, dst = connect(lab["providers"]["provider-a"]), connect(nocriu)
    with pytest.raises(vimigrate.MigrationFailedError) as caught:
        vimigrate.migrate(a, dst, {"container": counter})
    err = caught.value
    message = str(err)
    assert err.phase == "preflight" and err.rollback == "nothing_to_undo", message
    assert "provider-nocriu" in message and "CRIU" in message, message
    # Why, in runc's words: the daemon found no criu to run.
    assert '"criu": executable file not found' in message, message
    assert "nothing was changed" in message, message
    assert_untouched(lab, nocriu, counter)


def test_destination_without_experimental_mode_fails_in_preflight(lab, nocriu, counter):
    # Restarts provider-nocriu without --experimental for this test, and back afterwards.
    plain = nocriu_up("--no-experimental")
    try:
        assert plain["experimental"] is False
        a, dst = connect(lab["providers"]["provider-a"]), connect(plain)
        assert dst.probe()["experimental"] is False
        with pytest.raises(vimigrate.MigrationFailedError) as caught:
            vimigrate.migrate(a, dst, {"container": counter})
        err = caught.value
        message = str(err)
        assert err.phase == "preflight" and err.rollback == "nothing_to_undo", message
        assert "provider-nocriu" in message and "experimental" in message, message
        assert_untouched(lab, plain, counter)
    finally:
        nocriu_up()
