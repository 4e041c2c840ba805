"""Secrets never leave where they are kept: a whole deployment's life in `cfy` local mode (TLS
client key and TSIG secret given inline, as `get_secret` gives them; a migration there and back
by the direct path, whose transfer token and key travel in directives; a failing execution)
leaves none of them in any output, event, error or runtime property; no directive is left on
the hosts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from framework.cfy import WEBAPP, migrate_args
from framework.engine import BOTH, HostFiles, root_dir
from framework.process import run


def _pem_body_lines(path: str) -> list[str]:
    """The base64 lines of a PEM file: any one of them in an output is a leak."""
    return [line for line in Path(path).read_text().splitlines() if line and not line.startswith("-----")]


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    return set()


def test_no_secret_in_outputs_events_errors_or_runtime_properties(lab, cfy, cfy_env, tmp_path):
    tls = lab.b.require_tls()
    tsig = lab.dns.tsig_secret()
    blueprint_id = f"secrets-{uuid.uuid4().hex[:6]}"
    port = 18150
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({
        "provider_a": lab.a.blueprint_input(),
        # provider-b over TCP with TLS, its material inline (what get_secret hands over).
        "provider_b": {**lab.b.blueprint_input(), "docker_host": tls.docker_host},
        "provider_b_tls": {"ca_cert": Path(tls.ca).read_text(), "client_cert": Path(tls.cert).read_text(),
                           "client_key": Path(tls.key).read_text()},
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 2,
        "dns_server": {"kind": "rfc2136", "server": lab.dns.address, "tsig_key_name": lab.dns.tsig_key_name,
                       "tsig_secret": tsig},
    }))
    outputs: list[str] = []

    def cfy_out(*args: str) -> str:
        result = run([cfy, *args], env=cfy_env, timeout=600)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, f"cfy {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    cfy_out("init", str(WEBAPP), "-b", blueprint_id, "-i", str(inputs))
    try:
        cfy_out("executions", "start", "install", "-b", blueprint_id)
        host_files = HostFiles(lab)
        cfy_out(*migrate_args(blueprint_id, "target_provider=provider_b", "dns_wait_ttl=false"))
        cfy_out(*migrate_args(blueprint_id, "target_provider=provider_a", "dns_wait_ttl=false"))
        failed = run([cfy, *migrate_args(blueprint_id, "target_provider=nowhere")], env=cfy_env, timeout=300)
        outputs.append(failed.stdout + failed.stderr)
        assert failed.returncode != 0 and "target_provider" in failed.stdout + failed.stderr
        for node in ("provider_a", "provider_b", "redis", "web", "web_dns", "app_net"):
            outputs.append(cfy_out("node-instances", "-b", blueprint_id, node))
    finally:
        cfy_out("executions", "start", "uninstall", "-b", blueprint_id)
    everything = "\n".join(outputs)
    assert "runs on provider-b" in everything or "provider_b" in everything, "the migrations ran"
    assert tsig not in everything, "the TSIG secret leaked"
    for line in _pem_body_lines(tls.key):
        assert line not in everything, "the TLS client key leaked"
    # The transfer's secrets lived in directives on the hosts, 0600 in a 0700 directory, and
    # were gone once acted on.
    seen = host_files.stop()
    assert seen.directives, "the watcher saw the migrations' directives"
    for path, mode, parent_mode in seen.directives:
        assert mode == 0o600 and parent_mode == 0o700, (path, oct(mode), oct(parent_mode))
    for p in BOTH:
        root = root_dir(lab, p)
        assert list(root.glob("containers/*/vimigrate/directive.json")) == [], f"a directive left on {p}"
        for status in root.glob("containers/*/vimigrate/status.json"):
            fields = _keys(json.loads(status.read_text()))
            assert not fields & {"token", "key", "cert", "secret"}, (status, fields)
