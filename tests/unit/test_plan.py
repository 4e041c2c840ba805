"""The migrate workflow's plan: parameter validation, dependency order, what the dry run says."""

from __future__ import annotations

import pytest

from vimigrate.workflows.plan import ContainerState, PlanError, ProviderInfo, build_plan, order_by_dependencies
from vimigrate.workflows.plan import validate_parameters as validate

PROVIDERS = {
    "provider_a": ProviderInfo("provider_a", "provider-a", "192.0.2.11"),
    "provider_b": ProviderInfo("provider_b", "provider-b", "192.0.2.12"),
}
REDIS = ContainerState("redis_1", "redis", "d-redis", "provider_a", (), ("d-app",), ())
WEB = ContainerState("web_1", "web", "d-web", "provider_a", ("redis",), ("d-app",), (8080,))


def ok(**overrides):
    params = dict(target_provider="provider_b", node_ids=None, keep_source=False, dry_run=False, timeout=120,
                  providers=PROVIDERS, container_nodes={"redis", "web"})
    params.update(overrides)
    return validate(**params)


@pytest.mark.parametrize(("override", "field"), [
    ({"target_provider": "provider_x"}, "target_provider"),
    ({"target_provider": None}, "target_provider"),
    ({"target_provider": "web"}, "target_provider"),
    ({"node_ids": ["nope"]}, "node_ids"),
    ({"node_ids": "nope,web"}, "node_ids"),
    ({"node_ids": [1]}, "node_ids"),
    ({"keep_source": "yes"}, "keep_source"),
    ({"dry_run": 1}, "dry_run"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "60"}, "timeout"),
    ({"timeout": True}, "timeout"),
    ({"method": "teleport"}, "method"),
    ({"method": 1}, "method"),
    ({"memory": "postcopy"}, "memory"),
    ({"memory": None}, "memory"),
    ({"compression": "gzip"}, "compression"),
    # YAML 1.1's unquoted `off`.
    ({"compression": False}, "compression"),
    ({"target_provider": ""}, "target_provider"),
    ({"node_ids": {"web": 1}}, "node_ids"),
])
def test_every_wrong_parameter_is_named(override, field):
    with pytest.raises(PlanError) as caught:
        ok(**override)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"invalid `{field}`: expected ")


def test_every_memory_mode_and_compression_is_taken():
    for memory in ("stop-and-copy", "pre-copy", "post-copy", "auto"):
        for compression in ("auto", "zstd", "off"):
            assert ok(memory=memory, compression=compression) is None


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(PlanError, match=r"provider_a, provider_b"):
        ok(target_provider="provider_x")


def test_selection_defaults_to_every_container():
    assert ok() is None
    assert ok(node_ids=[]) is None
    assert ok(node_ids=["web"]) == ["web"]
    assert ok(node_ids="web, redis") == ["web", "redis"]
    assert ok(node_ids="[web]") == ["web"]


def test_dependencies_move_first():
    assert [c.node_id for c in order_by_dependencies([WEB, REDIS])] == ["redis", "web"]


def test_a_dependency_cycle_is_refused():
    a = ContainerState("a_1", "a", None, "provider_a", ("b",))
    b = ContainerState("b_1", "b", None, "provider_a", ("a",))
    with pytest.raises(PlanError, match="cycle"):
        order_by_dependencies([a, b])


def test_plan_describes_moves_endpoints_and_skips():
    plan = build_plan("provider_b", None, [WEB, REDIS], PROVIDERS)
    assert [s.node_id for s in plan.moves] == ["redis", "web"]
    text = "\n".join(plan.describe())
    assert "d-web (web): provider-a -> provider-b" in text
    assert "published 192.0.2.11:8080 -> 192.0.2.12:8080" in text
    back = build_plan("provider_a", ["web"], [WEB, REDIS], PROVIDERS)
    assert back.moves == [] and back.steps[0].skip == "already there"


def test_uninstalled_containers_are_skipped():
    ghost = ContainerState("g_1", "g", None, None)
    plan = build_plan("provider_b", None, [ghost], PROVIDERS)
    assert plan.steps[0].skip == "not installed" and plan.moves == []


def test_no_timeout_keeps_each_provider_s_own():
    """The workflow's `timeout` defaults to null: each provider's timeout_secs holds."""
    assert ok(timeout=None) is None
    assert ok(timeout=3600) is None
    with pytest.raises(PlanError, match="or null for each provider's own timeout_secs"):
        ok(timeout=3601)
