"""The real Cloudify CLI in local mode moving the example VI (web + Redis, with its public name in
BIND9) between a Docker 20.10 provider and a Docker 28 one, where Docker's own restore is broken
(moby/moby#50750): the workflow's direct path moves it there and back, partially too, and Docker's
path is refused by the dry run naming why, nothing changed."""

from __future__ import annotations

import uuid

from framework.cfy import cfy as cfy_run
from framework.cfy import cfy_fails, instances, migrate_args, webapp
from framework.engine import connect
from framework.process import run
from framework.workloads import visits_at, web_stats

PROVIDERS = ("provider-a", "provider-28")


def _dig(lab, name: str) -> list[str]:
    dns = lab.dns
    return run(["dig", "+short", f"@{dns.server}", "-p", str(dns.port), f"{name}.{dns.zone}", "A"]).stdout.split()


def test_the_example_vi_moves_to_docker_28_and_back(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"eng-{uuid.uuid4().hex[:6]}"
    port, redis_port = 18097, 18397
    address = {p: lab.provider(p).public_address for p in PROVIDERS}
    providers = {p: connect(lab, p) for p in PROVIDERS}
    names = (f"{blueprint_id}-web", f"{blueprint_id}-redis")

    def where() -> dict:
        return {n: [p for p, prov in providers.items() if (prov.inspect_container(n) or {}).get("running")]
                for n in names}

    def cfy_migrate(*params: str) -> str:
        return cfy_run(cfy, cfy_env, *migrate_args(blueprint_id, *params))

    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, provider_b=lab.provider("provider-28").blueprint_input(),
                web_public_port=port, redis_public_port=redis_port, dns_name=blueprint_id, dns_ttl=2):
        first = visits_at(address["provider-a"], port)

        plan = cfy_migrate("target_provider=provider_b", "dry_run=true")
        # The blueprint names its second provider provider-b; behind it runs Docker 28.
        assert "path: direct" in plan and "host provider-b: Docker 28.5" in plan, plan
        assert "dry run: nothing was changed" in plan
        refused = cfy_fails(cfy, cfy_env, *migrate_args(blueprint_id, "target_provider=provider_b", "dry_run=true",
                                                          "method=docker"))
        assert "the migration would be refused" in refused and "moby/moby#50750" in refused, refused
        bad = cfy_fails(cfy, cfy_env, *migrate_args(blueprint_id, "target_provider=provider_b",
                                                      "ignore_host_checks=[gpu]"))
        assert "invalid `ignore_host_checks`" in bad and "nothing was changed" in bad, bad
        assert where() == {n: ["provider-a"] for n in names}

        # Partial: the web server first, reaching Redis on provider-a's public address.
        cfy_migrate("target_provider=provider_b", "node_ids=[web]")
        assert visits_at(address["provider-28"], port) == first + 1
        assert web_stats(address["provider-28"], port)["redis_addr"] == f"{address['provider-a']}:{redis_port}"
        cfy_migrate("target_provider=provider_b", "node_ids=[redis]")
        assert where() == {n: ["provider-28"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-28"]], "clients follow the service to Docker 28"
        on_28 = visits_at(address["provider-28"], port)
        assert on_28 > first + 1, "the visit count lives on in the migrated Redis"
        [web] = instances(cfy, cfy_env, blueprint_id, "web")
        assert web["runtime_properties"]["provider"] == "provider-b"

        out = cfy_migrate("target_provider=provider_a")
        assert "as one group" in out and "now run on provider-a" in out, out
        assert where() == {n: ["provider-a"] for n in names}
        assert _dig(lab, blueprint_id) == [address["provider-a"]]
        assert visits_at(address["provider-a"], port) == on_28 + 1
    for provider in providers.values():
        for name in names:
            assert provider.inspect_container(name) is None, f"{name} left on {provider.name}"
