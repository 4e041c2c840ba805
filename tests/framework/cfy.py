"""The real Cloudify CLI (`cfy`, 7.0.5) in local mode: an isolated profile per test, commands that
must succeed or fail, node instances read back, and blueprints/webapp.yaml deployed on the lab."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .lab import ROOT, Lab
from .process import run

WEBAPP = ROOT / "blueprints" / "webapp.yaml"
PROVIDER_CHECK = ROOT / "blueprints" / "provider-check.yaml"


def isolated_env(workdir: Path) -> dict[str, str]:
    """An environment with its own local Cloudify profile, and this Python's bin first on PATH
    (where the plugin's operations run)."""
    return dict(os.environ, CFY_WORKDIR=str(workdir), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def cfy(cli: str, env: dict[str, str], *args: str) -> str:
    """`cfy ARGS`, which must succeed; its stdout."""
    result = run([cli, *args], env=env, timeout=600)
    assert result.returncode == 0, f"cfy {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def cfy_fails(cli: str, env: dict[str, str], *args: str) -> str:
    """`cfy ARGS`, which must fail; what it printed."""
    result = run([cli, *args], env=env, timeout=600)
    assert result.returncode != 0, f"cfy {' '.join(args)} should have failed:\n{result.stdout}"
    return result.stdout + result.stderr


def instances(cli: str, env: dict[str, str], blueprint_id: str, node: str) -> list[dict[str, Any]]:
    """The node instances of `node`. In local mode `node-instances` logs them as JSON (its
    --json flag silences that log)."""
    found = json.loads(cfy(cli, env, "node-instances", "-b", blueprint_id, node))
    assert isinstance(found, list), found
    return found


def webapp_inputs(lab: Lab, tmp_path: Path, **extra: Any) -> Path:
    """An inputs file for blueprints/webapp.yaml on the lab's two providers and its BIND9, with
    `extra` inputs added or replaced."""
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"provider_a": lab.a.blueprint_input(), "provider_b": lab.b.blueprint_input(),
                                  "dns_server": lab.dns.blueprint_server(), **extra}))
    return inputs


@contextmanager
def webapp(cli: str, env: dict[str, str], lab: Lab, tmp_path: Path, blueprint_id: str,
           **extra: Any) -> Iterator[None]:
    """blueprints/webapp.yaml installed as `blueprint_id` (inputs: webapp_inputs), uninstalled
    afterwards whatever happened."""
    cfy(cli, env, "init", str(WEBAPP), "-b", blueprint_id, "-i", str(webapp_inputs(lab, tmp_path, **extra)))
    try:
        cfy(cli, env, "executions", "start", "install", "-b", blueprint_id)
        yield
    finally:
        cfy(cli, env, "executions", "start", "uninstall", "-b", blueprint_id)


def migrate_args(blueprint_id: str, *params: str) -> list[str]:
    """`cfy`'s arguments that start the migrate workflow with `params` (name=value each)."""
    args = ["executions", "start", "migrate", "-b", blueprint_id]
    for param in params:
        args += ["-p", param]
    return args
