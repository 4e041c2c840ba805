"""The heal workflow after a broker died mid-migration of a deployment's container: `cfy
executions start heal` puts it on one provider, records where, and the application goes on."""

from __future__ import annotations

import uuid

from framework.cfy import cfy as cfy_run
from framework.cfy import instances, webapp
from framework.engine import BOTH, container_ids, docker, running_on, start_cli_migrate
from framework.process import wait_for
from framework.workloads import visits_at, visits_now


def test_heal_workflow_after_a_broker_died_mid_migration(lab, cfy, cfy_env, tmp_path):
    """A deployment's Redis is caught mid-migration by a broker that dies; `cfy executions
    start heal` puts it on one provider, records where, and the application goes on counting."""
    blueprint_id = f"heal-{uuid.uuid4().hex[:6]}"
    port = 18190
    a_addr = lab.a.public_address
    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=2):
        before = wait_for(lambda: visits_at(a_addr, port), what="the web server to count")
        broker = start_cli_migrate(lab, f"{blueprint_id}-redis")
        for line in broker.stderr:
            if line.startswith("checkpoint..."):
                broker.kill()
                break
        broker.wait(timeout=30)
        out = cfy_run(cfy, cfy_env, "executions", "start", "heal", "-b", blueprint_id)
        assert "heal done" in out, out
        [redis] = instances(cfy, cfy_env, blueprint_id, "redis")
        where = redis["runtime_properties"]["provider"]
        assert running_on(lab, f"{blueprint_id}-redis") == [where], where
        address = lab.provider(where).public_address
        # The web server still runs on provider-a; it reaches Redis again (where it runs, once
        # it reconnects) and the count goes on from where it was.
        if where == "provider-a":
            after = wait_for(lambda: visits_now(a_addr, port), timeout=30, what="the web server to count again")
            assert after > before, (before, after)
        else:
            assert address == lab.b.public_address
    # Nothing of the deployment is left anywhere, not even the network the dead broker's
    # migration had made on provider-b.
    for provider in BOTH:
        assert container_ids(lab, provider, f"name={blueprint_id}") == [], provider
        networks = docker(lab, provider, "network", "ls", "--format", "{{.Name}}").split()
        left = [n for n in networks if n.startswith(blueprint_id)]
        assert not left, f"a network of {blueprint_id} left on {provider}: {left}"
