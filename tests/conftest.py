"""Fixtures and layers. tests/unit runs anywhere (no root, no lab); tests/lab needs the provider
lab; tests/cfy runs the real Cloudify CLI (most of it on the lab). A test's layer gives it its
marker (`-m "not lab"` and the like select by layer). Tests that need the lab fail (never skip)
with a message naming what is missing, so a green run always means the real thing was
exercised."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from framework import lab as lab_view
from framework.cfy import isolated_env
from framework.engine import connect_both

import vimigrate

#: The checkout (kept for tests that import it from here).
ROOT = lab_view.ROOT
_LAYERS = {"lab": pytest.mark.lab, "cfy": pytest.mark.cfy, "guest": pytest.mark.guest}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(here).parts if item.path.is_relative_to(here) else ()
        if parts and parts[0] in _LAYERS:
            item.add_marker(_LAYERS[parts[0]])


@pytest.fixture(scope="session")
def lab() -> lab_view.Lab:
    """The running lab (.lab/lab.json, typed), checked to be up."""
    try:
        return lab_view.running()
    except lab_view.LabMissingError as missing:
        pytest.fail(str(missing))


@pytest.fixture(autouse=True)
def _lab_layer_needs_the_lab(request: pytest.FixtureRequest) -> None:
    """Every test of tests/lab needs the lab, even one that does not name it: without it, it
    fails saying what is missing."""
    if (request.node.get_closest_marker("lab") or request.node.get_closest_marker("guest")) \
            and "lab" not in request.fixturenames:
        request.getfixturevalue("lab")


@pytest.fixture
def providers(lab: lab_view.Lab) -> tuple[vimigrate.Provider, vimigrate.Provider]:
    """provider-a and provider-b, connected through their unix sockets."""
    return connect_both(lab)


@pytest.fixture(scope="session")
def cfy() -> str:
    """Path of the real Cloudify CLI installed next to this Python."""
    path = Path(sys.executable).with_name("cfy")
    if path.exists():
        return str(path)
    found = shutil.which("cfy")
    if not found:
        pytest.fail("the Cloudify CLI (`cfy`, PyPI cloudify==7.0.5) is not installed; run `make python`")
    return found


@pytest.fixture
def cfy_env(tmp_path: Path) -> dict[str, str]:
    """An isolated local Cloudify profile, and the venv's bin first on PATH."""
    return isolated_env(tmp_path / "cfy")
