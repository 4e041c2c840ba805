"""Secrets never leave where they are kept: a whole deployment's life in `cfy` local mode (TLS
client key and TSIG secret given inline, as `get_secret` gives them; a migration there and back
by the direct path, whose transfer token and key travel in directives; a failing execution)
leaves none of them in any output, event, error or runtime property; no directive is left on
the hosts; the checkpoint images are private and deleted."""

from __future__ import annotations

import json
import re
import stat
import threading
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, docker, run
from test_cfy_local import cfy_env  # noqa: F401  (fixture)

pytestmark = [pytest.mark.lab, pytest.mark.cfy]


def _tsig_secret(lab: dict) -> str:
    text = Path(lab["dns"]["tsig_key_file"]).read_text()
    return re.search(r'secret "([^"]+)"', text).group(1)


def _pem_body_lines(path: str) -> list[str]:
    """The base64 lines of a PEM file: any one of them in an output is a leak."""
    return [l for l in Path(path).read_text().splitlines() if l and not l.startswith("-----")]


def test_no_secret_in_outputs_events_errors_or_runtime_properties(lab, cfy, cfy_env, tmp_path):
    tls = lab["providers"]["provider-b"]["tls"]
    tsig = _tsig_secret(lab)
    blueprint_id = f"secrets-{uuid.uuid4().hex[:6]}"
    port = 18150
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({
        "provider_a": {k: lab["providers"]["provider-a"][k] for k in ("docker_host", "public_address")},
        # provider-b over TCP with TLS, its material inline (what get_secret hands over).
        "provider_b": {"docker_host": tls["docker_host"], "public_address": lab["providers"]["provider-b"]["public_address"]},
        "provider_b_tls": {"ca_cert": Path(tls["ca"]).read_text(), "client_cert": Path(tls["cert"]).read_text(),
                           "client_key": Path(tls["key"]).read_text()},
        "web_public_port": port, "redis_public_port": port + 300, "dns_name": blueprint_id, "dns_ttl": 2,
        "dns_server": {"kind": "rfc2136", "server": f"{lab['dns']['server']}:{lab['dns']['port']}",
                       "tsig_key_name": lab["dns"]["tsig_key_name"], "tsig_secret": tsig},
    }))
    outputs: list[str] = []

    def cfy_out(*args: str) -> str:
        result = run([cfy, *args], env=cfy_env, timeout=600)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, f"cfy {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    cfy_out("init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint_id, "-i", str(inputs))
    try:
        cfy_out("executions", "start", "install", "-b", blueprint_id)
        host_files = _watch_directives(lab)
        cfy_out("executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_b",
                "-p", "dns_wait_ttl=false")
        cfy_out("executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=provider_a",
                "-p", "dns_wait_ttl=false")
        failed = run([cfy, "executions", "start", "migrate", "-b", blueprint_id, "-p", "target_provider=nowhere"],
                     env=cfy_env, timeout=300)
        outputs.append(failed.stdout + failed.stderr)
        assert failed.returncode != 0 and "target_provider" in failed.stdout + failed.stderr
        for node in ("provider_a", "provider_b", "redis", "web", "web_dns", "app_net"):
            outputs.append(cfy_out("node-instances", "-b", blueprint_id, node))
    finally:
        cfy_out("executions", "start", "uninstall", "-b", blueprint_id)
    everything = "\n".join(outputs)
    assert "runs on provider-b" in everything or "provider_b" in everything, "the migrations ran"
    assert tsig not in everything, "the TSIG secret leaked"
    for line in _pem_body_lines(tls["key"]):
        assert line not in everything, "the TLS client key leaked"
    # The transfer's secrets lived in directives on the hosts, 0600 in a 0700 directory, and
    # were gone once acted on.
    seen = host_files()
    assert seen["directives"], "the watcher saw the migrations' directives"
    for path, mode, parent_mode in seen["directives"]:
        assert mode == 0o600 and parent_mode == 0o700, (path, oct(mode), oct(parent_mode))
    for p in ("provider-a", "provider-b"):
        root = Path(docker(lab, p, "info", "-f", "{{.DockerRootDir}}").strip())
        assert list(root.glob("containers/*/vimigrate/directive.json")) == [], f"a directive left on {p}"
        for status in root.glob("containers/*/vimigrate/status.json"):
            fields = _keys(json.loads(status.read_text()))
            assert not fields & {"token", "key", "cert", "secret"}, (status, fields)


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    return set()


def _watch_directives(lab: dict):
    """Watches both hosts' container directories while migrations run, recording every directive
    seen with its mode and its directory's mode, and every checkpoint directory's mode."""
    roots = [Path(docker(lab, p, "info", "-f", "{{.DockerRootDir}}").strip()) for p in ("provider-a", "provider-b")]
    seen: dict = {"directives": set(), "checkpoints": set()}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for root in roots:
                for d in root.glob("containers/*/vimigrate/directive.json"):
                    try:
                        seen["directives"].add((str(d), stat.S_IMODE(d.stat().st_mode),
                                                stat.S_IMODE(d.parent.stat().st_mode)))
                    except FileNotFoundError:
                        pass
                for c in root.glob("containers/*/checkpoints/*"):
                    try:
                        seen["checkpoints"].add((str(c), stat.S_IMODE(c.stat().st_mode)))
                    except FileNotFoundError:
                        pass
            stop.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def done() -> dict:
        stop.set()
        thread.join()
        return seen

    return done


def test_checkpoint_images_are_private_and_deleted(lab, cfy, cfy_env, tmp_path):
    """Checkpoint directories (process memory) are 0700 while they exist, and gone from both
    hosts after a migration and after a rollback."""
    import vimigrate
    from test_direct_lab import run_direct
    from test_migrate_lab import connect

    a, b = connect(lab, "provider-a"), connect(lab, "provider-b")
    name = f"vmtest-private-{uuid.uuid4().hex[:6]}"
    watch = _watch_directives(lab)
    try:
        run_direct(lab, name)
        vimigrate.migrate(a, b, {"container": name})
        with pytest.raises(vimigrate.MigrationFailedError):
            vimigrate.migrate(b, a, {"container": name, "fault": "corrupt_stream"})
        seen = watch()
        assert seen["checkpoints"], "the watcher saw the checkpoints"
        for path, mode in seen["checkpoints"]:
            assert mode == 0o700, (path, oct(mode))
        # It runs on B again (the corrupted move back rolled back); nothing else is left.
        root_b = Path(docker(lab, "provider-b", "info", "-f", "{{.DockerRootDir}}").strip())
        id_b = docker(lab, "provider-b", "inspect", "-f", "{{.Id}}", name).strip()
        assert list((root_b / "containers" / id_b / "checkpoints").iterdir()) == [], "checkpoint data left on B"
        assert docker(lab, "provider-a", "ps", "-aq", "--filter", f"name=^/{name}$").strip() == ""
        seen_paths = {Path(p).parent.parent.name for p, _ in seen["checkpoints"]}
        assert len(seen_paths) >= 3, f"checkpoints of A, B and the rolled-back destination: {seen_paths}"
    finally:
        for p in ("provider-a", "provider-b"):
            docker(lab, p, "rm", "-f", name, check=False)
