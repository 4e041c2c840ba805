"""Shared fixtures. Tests that need the lab fail (never skip) with a message naming what is
missing, so a green run always means the real thing was exercised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAB_JSON = ROOT / ".lab" / "lab.json"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def lab() -> dict:
    """The running lab's connection facts (.lab/lab.json), checked to be alive."""
    if not LAB_JSON.exists():
        pytest.fail(f"the provider lab is not set up: {LAB_JSON} is missing; run `make lab-up`")
    facts = json.loads(LAB_JSON.read_text())
    for name, provider in facts["providers"].items():
        socket = provider["docker_host"].removeprefix("unix://")
        if not os.path.exists(socket):
            pytest.fail(f"{name} is not running: no socket at {socket}; run `make lab-up`")
    return facts


@pytest.fixture(scope="session")
def cfy() -> str:
    """Path of the real Cloudify CLI installed next to this Python."""
    path = Path(os.sys.executable).with_name("cfy")
    if not path.exists():
        found = shutil.which("cfy")
        if not found:
            pytest.fail("the Cloudify CLI (`cfy`, PyPI cloudify==7.0.5) is not installed; run `make python`")
        return found
    return str(path)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; the caller asserts on the result."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kwargs.pop("timeout", 300), **kwargs)


#: Debian's Docker 20.10 client; /usr/local/bin/docker may be a newer one these daemons refuse.
DOCKER = "/usr/bin/docker"


def docker_at(host: str, *args: str, check: bool = True) -> str:
    """The docker CLI against the daemon at `host`; asserts success unless `check` is false."""
    env = dict(os.environ, DOCKER_API_VERSION="1.41")
    result = run([DOCKER, "-H", host, *args], env=env, timeout=120)
    if check:
        assert result.returncode == 0, f"docker -H {host} {' '.join(args)}: {result.stderr}"
    return result.stdout


def docker(lab: dict, provider: str, *args: str, check: bool = True) -> str:
    """The docker CLI against one of the lab's providers."""
    return docker_at(lab["providers"][provider]["docker_host"], *args, check=check)


def numbers(logs: str) -> list[int]:
    """The numbers a counter container printed."""
    return [int(line) for line in logs.split() if line.strip().isdigit()]


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Polls `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
