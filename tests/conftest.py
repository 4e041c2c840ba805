"""Shared fixtures. Tests that need the lab fail (never skip) with a message naming what is
missing, so a green run always means the real thing was exercised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
