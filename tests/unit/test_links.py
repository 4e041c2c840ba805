"""Links between containers split across providers, and back: the rewrites the workflow asks for."""

from __future__ import annotations

from vimigrate.workflows.links import Peer, link_map, merge
from vimigrate.workflows.plan import ContainerState, ProviderInfo, build_plan

PUBLIC = {"provider_a": "192.0.2.11", "provider_b": "192.0.2.12"}
REDIS_ON_A = Peer("redis", "provider_a", ("redis", "d-redis"), ("172.29.0.2",), ((6379, 16379),))


def test_a_dependency_left_behind_is_reached_through_its_provider():
    plan = link_map(REDIS_ON_A, "provider_b", PUBLIC)
    assert plan.address_map["redis:6379"] == "192.0.2.11:16379"
    assert plan.address_map["d-redis:6379"] == "192.0.2.11:16379"
    assert plan.address_map["172.29.0.2:6379"] == "192.0.2.11:16379"
    # A stale external form (the dependency was on B before) is pointed at A too.
    assert plan.address_map["192.0.2.12:16379"] == "192.0.2.11:16379"
    assert plan.unreachable == []


def test_together_again_the_link_is_internal():
    redis_on_b = Peer("redis", "provider_b", ("redis",), ("172.30.0.2",), ((6379, 16379),))
    plan = link_map(redis_on_b, "provider_b", PUBLIC)
    assert plan.address_map == {"192.0.2.11:16379": "redis:6379", "192.0.2.12:16379": "redis:6379"}


def test_an_unpublished_dependency_cannot_be_reached_across_providers():
    hidden = Peer("redis", "provider_a", ("redis",), (), ())
    plan = merge(link_map(hidden, "provider_b", PUBLIC))
    assert plan.address_map == {} and plan.unreachable == ["redis publishes no port on provider_a"]


def test_the_plan_lists_the_link_rewrites_of_a_partial_move():
    providers = {k: ProviderInfo(k, k.replace("_", "-"), v) for k, v in PUBLIC.items()}
    redis = ContainerState("redis_1", "redis", "d-redis", "provider_a", (), ("d-app",), (16379,), ("redis",),
                           ("172.29.0.2",), ((6379, 16379),))
    web = ContainerState("web_1", "web", "d-web", "provider_a", ("redis",), ("d-app",), (8080,), ("d-web",),
                         ("172.29.0.3",), ((8080, 8080),), ("/etc/web/web.conf",))
    text = "\n".join(build_plan("provider_b", ["web"], [web, redis], providers).describe())
    assert "d-web: redis:6379 -> 192.0.2.11:16379" in text, text
    back = "\n".join(build_plan("provider_b", ["redis"], [web, redis], providers).describe())
    assert "d-web (stays): redis:6379 -> 192.0.2.12:16379" in back, back
