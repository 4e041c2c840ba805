"""Two `cfy` executions of migrate on one deployment at the same time: the second is refused
with the engine's message, the first moves the deployment."""

from __future__ import annotations

import threading
import uuid

from framework.cfy import instances, migrate_args, webapp
from framework.engine import container_ids
from framework.process import run, wait_for


def test_a_second_cfy_migrate_of_a_deployment_is_refused(lab, cfy, cfy_env, tmp_path):
    blueprint_id = f"conc-{uuid.uuid4().hex[:6]}"
    port = 18170
    with webapp(cfy, cfy_env, lab, tmp_path, blueprint_id, web_public_port=port, redis_public_port=port + 300,
                dns_name=blueprint_id, dns_ttl=2):
        command = [cfy, *migrate_args(blueprint_id, "target_provider=provider_b", "dns_wait_ttl=false")]
        results: list = []
        first = threading.Thread(target=lambda: results.append(run(command, env=cfy_env, timeout=600)))
        first.start()
        # The second starts while the first is moving Redis.
        wait_for(lambda: container_ids(lab, "provider-a", f"name=^/vimigrate-lock-{blueprint_id}-redis$"),
                 timeout=60, what="the first migration to hold Redis's lock")
        second = run(command, env=cfy_env, timeout=600)
        first.join(timeout=600)
        assert results[0].returncode == 0, results[0].stdout + results[0].stderr
        assert second.returncode != 0
        out = second.stdout + second.stderr
        assert "is being migrated already" in out, out
        [web] = instances(cfy, cfy_env, blueprint_id, "web")
        assert web["runtime_properties"]["provider"] == "provider-b"
