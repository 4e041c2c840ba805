"""What the real `cfy` (7.0.5, local mode) does with a wrong parameter of the migrate workflow,
typed with DSL 1.4 in plugin.yaml: the DSL refuses a missing or undeclared parameter and a value
not of its boolean or integer type before any code runs; node_id, item_type and valid_values
only a Cloudify Manager enforces, so there the workflow's own validation refuses it, naming the
parameter. Either way nothing changes. Needs no lab: nothing is installed, nothing reached."""

from __future__ import annotations

import json
import uuid

import pytest
from framework.cfy import WEBAPP, isolated_env, migrate_args
from framework.cfy import cfy as cfy_run
from framework.process import run

#: Providers at documentation addresses (RFC 5737) on sockets that do not exist: never reached.
INPUTS = {"provider_a": {"docker_host": "unix:///nonexistent/a.sock", "public_address": "192.0.2.11"},
          "provider_b": {"docker_host": "unix:///nonexistent/b.sock", "public_address": "192.0.2.12"}}
#: What the workflow logs first: a parameter the DSL refused never gets there.
STARTED = "Starting 'migrate' workflow execution"


@pytest.fixture(scope="module")
def deployment(cfy, tmp_path_factory) -> tuple[dict[str, str], str]:
    """blueprints/webapp.yaml initialized (not installed) in a profile of its own."""
    workdir = tmp_path_factory.mktemp("cfy-params")
    env = isolated_env(workdir / "cfy")
    inputs = workdir / "inputs.json"
    inputs.write_text(json.dumps(INPUTS))
    blueprint_id = f"params-{uuid.uuid4().hex[:6]}"
    cfy_run(cfy, env, "init", str(WEBAPP), "-b", blueprint_id, "-i", str(inputs))
    return env, blueprint_id


def _migrate(cfy: str, deployment: tuple[dict[str, str], str], *params: str) -> tuple[int, str]:
    env, blueprint_id = deployment
    result = run([cfy, *migrate_args(blueprint_id, *params)], env=env, timeout=300)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(("params", "refusal"), [
    ((), "must be provided with the following parameters to execute: target_provider"),
    (("target_provider=provider_b", "keep_source=maybe"), 'Parameter "keep_source" must be of type boolean'),
    (("target_provider=provider_b", "dry_run=1"), 'Parameter "dry_run" must be of type boolean'),
    (("target_provider=provider_b", "dns_wait_ttl=later"), 'Parameter "dns_wait_ttl" must be of type boolean'),
    (("target_provider=provider_b", "timeout=soon"), 'Parameter "timeout" must be of type integer'),
    (("target_provider=provider_b", "colour=red"), "does not have the following parameters declared: colour"),
])
def test_the_dsl_refuses_before_the_workflow_runs(cfy, deployment, params, refusal):
    status, out = _migrate(cfy, deployment, *params)
    assert status != 0 and refusal in out, out
    assert STARTED not in out, f"the workflow ran although the DSL should have refused: {out}"


@pytest.mark.parametrize(("params", "field"), [
    (("target_provider=nowhere",), "target_provider"),  # type: node_id
    (("target_provider=web",), "target_provider"),  # a node, but not a vimigrate.nodes.Provider
    (("target_provider=provider_b", "node_ids=[nope]"), "node_ids"),  # item_type: node_id
    (("target_provider=provider_b", "node_ids=[provider_a]"), "node_ids"),  # a node, but not a container
    (("target_provider=provider_b", "method=teleport"), "method"),  # valid_values
    (("target_provider=provider_b", "memory=postcopy"), "memory"),  # valid_values
    (("target_provider=provider_b", "compression=gzip"), "compression"),  # valid_values
    (("target_provider=provider_b", "order=parallel"), "order"),  # valid_values
    (("target_provider=provider_b", "timeout=0"), "timeout"),  # an integer, out of range
    (("target_provider=provider_b", "port_map=x"), "port_map"),  # type: dict
])
def test_what_local_mode_lets_through_the_workflow_refuses(cfy, deployment, params, field):
    status, out = _migrate(cfy, deployment, *params)
    assert status != 0, out
    assert STARTED in out, f"the DSL refused it already, update plugin.yaml's notes: {out}"
    assert f"invalid `{field}`" in out and "nothing was changed" in out, out


def test_a_dry_run_with_the_defaults_plans_and_changes_nothing(cfy, deployment):
    """`timeout` defaults to null (each provider's own timeout_secs): accepted as such."""
    status, out = _migrate(cfy, deployment, "target_provider=provider_b", "dry_run=true")
    assert status == 0, out
    assert "migration plan to provider_b: 0 container(s) move" in out and "not installed" in out, out
    assert "dry run: nothing was changed" in out, out
