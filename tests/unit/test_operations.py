"""The plugin's operations against Cloudify's mock context, with the native engine faked: what
they send to the engine, what they store, and how engine errors become Cloudify errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cloudify.exceptions import NonRecoverableError, RecoverableError
from cloudify.mocks import MockCloudifyContext, MockNodeContext, MockNodeInstanceContext
from cloudify.state import current_ctx

import vimigrate
from vimigrate import tosca
from vimigrate.operations import _support, container, provider


class FakeProvider:
    """Stands in for vimigrate._native.Provider; records every call."""

    calls: list[tuple[str, Any]] = []
    fail_with: Exception | None = None

    def __init__(self, config: dict):
        self.config = config

    @classmethod
    def connect(cls, config: dict) -> FakeProvider:
        cls.calls.append(("connect", config))
        if cls.fail_with is not None:
            raise cls.fail_with
        return cls(config)

    def probe(self) -> dict:
        return {"name": self.config["name"], "server_version": "20.10.24", "api_version": "1.41", "os": "linux",
                "arch": "amd64", "experimental": True}

    def ensure_network(self, spec: dict) -> dict:
        self.calls.append(("ensure_network", spec))
        return {"name": spec["name"]}

    def deploy_container(self, spec: dict) -> dict:
        self.calls.append(("deploy_container", spec))
        return {"id": "c0ffee" * 10, "name": spec["name"], "addresses": {"app": "172.29.0.2"},
                "ports": [{"container_port": 8080, "protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 8080}],
                "running": True}

    def remove_container(self, name: str) -> bool:
        self.calls.append(("remove_container", name))
        return True

    def remove_network(self, name: str, only_if_unused: bool = False) -> bool:
        self.calls.append(("remove_network", (name, only_if_unused)))
        return True


@pytest.fixture
def fake_native(monkeypatch):
    FakeProvider.calls = []
    FakeProvider.fail_with = None
    fake = SimpleNamespace(**{name: getattr(vimigrate._native, name) for name in dir(vimigrate._native)
                              if not name.startswith("__")})
    fake.Provider = FakeProvider
    from vimigrate.operations import migration

    for module in (provider, container, _support, migration):
        monkeypatch.setattr(module, "_native", fake)
    return FakeProvider


def _relationship(target_id: str, properties: dict, rel_type: str):
    target = SimpleNamespace(node=MockNodeContext(id=target_id, properties=properties),
                             instance=MockNodeInstanceContext(id=f"{target_id}_1", runtime_properties={}))
    return SimpleNamespace(target=target, type=rel_type, type_hierarchy=[rel_type, "cloudify.relationships.depends_on"])


def _use(ctx):
    current_ctx.set(ctx)
    return ctx


@pytest.fixture(autouse=True)
def _clear_ctx():
    yield
    current_ctx.clear()


def test_probe_stores_the_report(fake_native):
    ctx = _use(MockCloudifyContext(node_id="provider_a_1", node_name="provider_a", properties={
        "name": "", "docker_host": "unix:///run/a.sock", "allow_plain_tcp": False, "timeout_secs": 30,
        "public_address": "192.0.2.11", "tls": {}}, runtime_properties={}))
    provider.probe()
    config = fake_native.calls[0][1]
    assert config == {"name": "provider_a", "docker_host": "unix:///run/a.sock", "allow_plain_tcp": False,
                      "timeout_secs": 30, "public_address": "192.0.2.11"}
    assert ctx.instance.runtime_properties["provider"]["api_version"] == "1.41"
    assert ctx.instance.runtime_properties["engine_version"] == vimigrate.version()


def test_tls_files_are_passed_by_path(fake_native):
    _use(MockCloudifyContext(node_id="p_1", node_name="p", properties={
        "docker_host": "tcp://h:2376", "tls": {"ca": "/c/ca.pem", "cert": "/c/cert.pem",
                                               "key": "/c/key.pem"}}, runtime_properties={}))
    provider.probe()
    assert fake_native.calls[0][1]["tls"] == {"ca": "/c/ca.pem", "cert": "/c/cert.pem", "key": "/c/key.pem"}


def test_unreachable_provider_is_retried(fake_native):
    fake_native.fail_with = vimigrate.ProviderUnavailableError("provider `p`: cannot connect")
    _use(MockCloudifyContext(node_id="p_1", node_name="p", properties={"docker_host": "unix:///x"},
                             runtime_properties={}))
    with pytest.raises(RecoverableError, match="cannot connect"):
        provider.probe()


def test_bad_input_is_not_retried(fake_native):
    fake_native.fail_with = vimigrate.InvalidInputError("invalid `docker_host`: expected ...")
    _use(MockCloudifyContext(node_id="p_1", node_name="p", properties={"docker_host": "nope"}, runtime_properties={}))
    with pytest.raises(NonRecoverableError, match="docker_host"):
        provider.probe()


def _container_ctx(runtime_properties: dict | None = None):
    relationships = [
        _relationship("provider_a", {"name": "provider-a", "docker_host": "unix:///run/a.sock",
                                     "public_address": "192.0.2.11"}, tosca.RUNS_ON),
        _relationship("app_net", {"network_name": "vimigrate-app", "subnet": "", "gateway": ""},
                      tosca.CONNECTED_TO_NETWORK),
    ]
    return _use(MockCloudifyContext(
        node_id="web_1", node_name="web", deployment_id="dep1",
        properties={"container_name": "", "image": "vimigrate-lab/web:latest", "env": {"REDIS_ADDR": "redis:6379"},
                    "ports": [{"container_port": 8080, "host_port": 8080}], "aliases": ["www"], "command": [],
                    "hostname": "web", "labels": {}, "volumes": [{"name": "web-data", "destination": "/data"}]},
        runtime_properties=runtime_properties if runtime_properties is not None else {},
        relationships=relationships))


def test_container_create_builds_the_spec_and_records_where_it_runs(fake_native):
    ctx = _container_ctx()
    container.create()
    calls = {name: arg for name, arg in fake_native.calls if name != "connect"}
    assert calls["ensure_network"] == {"name": "vimigrate-app"}, "an explicit network_name is kept"
    spec = calls["deploy_container"]
    assert spec["name"] == "dep1-web", "names default to DEPLOYMENT-NODE"
    assert spec["hostname"] == "web" and "command" not in spec
    assert spec["networks"] == [{"network": "vimigrate-app", "aliases": ["www"]}]
    assert spec["labels"] == {"io.vimigrate.deployment": "dep1", "io.vimigrate.node": "web"}
    assert spec["volumes"] == [{"name": "web-data", "destination": "/data"}]
    props = ctx.instance.runtime_properties
    assert props["provider"] == "provider-a" and props["provider_node"] == "provider_a"
    assert props["public_endpoints"] == ["192.0.2.11:8080"]
    assert props["provider_config"]["docker_host"] == "unix:///run/a.sock"


def test_container_delete_acts_where_it_runs_now(fake_native):
    ctx = _container_ctx({"provider_config": {"name": "provider-b", "docker_host": "unix:///run/b.sock"},
                          "provider_node": "provider_b", "container_name": "web", "networks": ["vimigrate-app"]})
    container.delete()
    assert fake_native.calls[0] == ("connect", {"name": "provider-b", "docker_host": "unix:///run/b.sock"})
    assert ("remove_container", "web") in fake_native.calls
    assert ("remove_network", ("vimigrate-app", True)) in fake_native.calls
    assert "provider_config" not in ctx.instance.runtime_properties


def test_container_without_provider_is_a_clear_error(fake_native):
    _use(MockCloudifyContext(node_id="web_1", node_name="web", properties={"image": "x"}, runtime_properties={},
                             relationships=[]))
    with pytest.raises(NonRecoverableError, match="exactly one provider relationship"):
        container.create()


@pytest.mark.parametrize(("deployment", "node", "expected"), [
    ("vimigrate-demo", "web", "vimigrate-demo-web"),
    ("my dep", "app_net", "my-dep-app_net"),
    ("_x", "n", "v_x-n"),
])
def test_default_names_are_valid_docker_names(deployment, node, expected):
    assert _support.default_name(deployment, node) == expected


def test_migration_records_where_the_container_runs_now(fake_native, monkeypatch):
    from vimigrate.operations import migration

    calls = []

    def fake_migrate(source, target, options, progress):
        calls.append((source.config["name"], target.config["name"], options))
        progress({"event": "phase", "phase": "checkpoint"})
        progress({"event": "bytes", "phase": "transfer", "bytes": 4096})
        return {"source": "provider-a", "destination": "provider-b", "destination_id": "b" * 64, "warnings": [],
                "stats": {"downtime_ms": 700, "transfer_bytes": 4096, "total_ms": 2000, "compression_ratio": 1.0,
                          "wire_bytes": 4096},
                "networks": [{"name": "dep1-app", "mode": "remap", "reason": "subnet taken"}],
                "address_changes": {"172.29.0.3": "172.30.0.7"}, "rewrites": [],
                "method": "direct", "method_reason": None, "memory": "stop-and-copy",
                "memory_reason": "the memory moves inside the freeze", "compression": "adaptive"}

    def inspect_container(self, name):
        return {"addresses": {"app": "172.30.0.5"},
                "ports": [{"container_port": 8080, "protocol": "tcp", "host_ip": "0.0.0.0", "host_port": 8080}]}

    fake = migration._native
    monkeypatch.setattr(migration, "_native", fake)
    monkeypatch.setattr(fake, "migrate", fake_migrate, raising=False)
    monkeypatch.setattr(FakeProvider, "inspect_container", inspect_container, raising=False)
    ctx = _container_ctx({"provider_config": {"name": "provider-a", "docker_host": "unix:///run/a.sock"},
                          "provider_node": "provider_a", "container_name": "dep1-web", "networks": ["dep1-app"]})
    target = {"name": "provider-b", "docker_host": "unix:///run/b.sock", "public_address": "192.0.2.12"}
    migration.migrate(target_provider_node="provider_b", target_provider=target, keep_source=False)
    assert calls == [("provider-a", "provider-b", {"container": "dep1-web", "keep_source": False, "address_map": {},
                                                    "peer_files": [], "port_map": {}, "method": "auto",
                                                    "check_criu": True, "ignore_host_checks": [],
                                                    "memory": "stop-and-copy", "compression": "auto"})]
    props = ctx.instance.runtime_properties
    assert props["provider_node"] == "provider_b" and props["provider"] == "provider-b"
    assert props["provider_config"] == target
    assert props["container_id"] == "b" * 64
    assert props["public_endpoints"] == ["192.0.2.12:8080"]
    assert props["migrations"][-1]["to"] == "provider-b" and props["last_migration"]["downtime_ms"] == 700
    assert props["last_address_changes"] == {"172.29.0.3": "172.30.0.7"}
    assert ("remove_network", ("dep1-app", True)) in fake_native.calls, "the source's network is cleaned"


def test_failed_migration_keeps_the_runtime_properties(fake_native, monkeypatch):
    from vimigrate.operations import migration

    def failing(*_):
        raise vimigrate.MigrationFailedError("failed in phase restore: ...; rolled back: runs on provider-a again")

    monkeypatch.setattr(migration._native, "migrate", failing, raising=False)
    before = {"provider_config": {"name": "provider-a", "docker_host": "unix:///run/a.sock"},
              "provider_node": "provider_a", "container_name": "dep1-web"}
    ctx = _container_ctx(dict(before))
    with pytest.raises(NonRecoverableError, match="phase restore"):
        migration.migrate(target_provider_node="provider_b", target_provider={"name": "provider-b"})
    assert ctx.instance.runtime_properties == before


@pytest.mark.parametrize("restart", [False, True])
def test_heal_passes_restart_from_image_and_records_where_it_runs(fake_native, monkeypatch, restart):
    from vimigrate.operations import migration

    calls = []

    def fake_heal(providers, name, *, restart_from_image=False):
        calls.append(([p.config["name"] for p in providers], name, restart_from_image))
        return {"container": name, "runs_on": "provider-b", "resumed": False,
                "restarted_from_image": restart_from_image, "removed": []}

    monkeypatch.setattr(migration._native, "heal", fake_heal, raising=False)
    monkeypatch.setattr(FakeProvider, "inspect_container", lambda self, name: {}, raising=False)
    ctx = _container_ctx({"provider_config": {"name": "provider-a", "docker_host": "unix:///run/a.sock"},
                          "provider_node": "provider_a", "container_name": "dep1-web"})
    configs = {"provider_a": {"name": "provider-a", "docker_host": "unix:///run/a.sock"},
               "provider_b": {"name": "provider-b", "docker_host": "unix:///run/b.sock"}}
    migration.heal(providers=configs, restart_from_image=restart)
    assert calls == [(["provider-a", "provider-b"], "dep1-web", restart)]
    assert ctx.instance.runtime_properties["provider_node"] == "provider_b"


def test_inline_tls_material_becomes_private_files(tmp_path, monkeypatch):
    monkeypatch.setenv(_support.TLS_DIR_ENV, str(tmp_path))
    secret_key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    config = _support.provider_config("provider_b", {
        "docker_host": "tcp://192.0.2.12:2376",
        "tls": {"ca_cert": "CA PEM", "client_cert": "CERT PEM", "client_key": secret_key}}, "dep1")
    assert secret_key not in repr(config), "only paths in the configuration"
    key = Path(config["tls"]["key"])
    assert key.read_text() == secret_key
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    assert key.parent == tmp_path / "dep1-provider_b"


def test_properties_without_a_value_are_left_to_the_engine_s_defaults():
    """Nothing is defaulted again here: the engine's serde defaults are the only ones."""
    config = _support.provider_config("provider_a", {"name": None, "docker_host": "unix:///run/a.sock",
                                                     "timeout_secs": None, "allow_plain_tcp": None, "tls": {}})
    assert config == {"name": "provider_a", "docker_host": "unix:///run/a.sock"}


def test_every_property_is_passed_through_for_the_engine_to_check():
    """A wrong value reaches the engine unchanged, whose error names the field."""
    config = _support.provider_config("p", {"docker_host": "unix:///run/a.sock", "timeout_secs": "soon",
                                            "transfer_port": 2377, "transfer_address": "10.0.0.7"})
    assert config == {"name": "p", "docker_host": "unix:///run/a.sock", "timeout_secs": "soon",
                      "transfer_port": 2377, "transfer_address": "10.0.0.7"}
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config)
    assert caught.value.field == "provider.timeout_secs"


def test_incomplete_tls_files_are_named_by_the_engine(tmp_path):
    config = _support.provider_config("p", {"docker_host": "tcp://192.0.2.10:2376", "tls": {"ca": "/c/ca.pem"}})
    assert config["tls"] == {"ca": "/c/ca.pem"}
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config)
    assert caught.value.field == "provider.tls.cert"


def test_inline_tls_material_and_paths_mix(tmp_path, monkeypatch):
    monkeypatch.setenv(_support.TLS_DIR_ENV, str(tmp_path))
    config = _support.provider_config("provider_b", {
        "docker_host": "tcp://192.0.2.10:2376", "tls": {"ca": "/etc/ca.pem", "client_cert": "CERT PEM",
                                                         "key": "/etc/key.pem"}}, "dep1")
    assert config["tls"] == {"ca": "/etc/ca.pem", "cert": str(tmp_path / "dep1-provider_b" / "cert.pem"),
                             "key": "/etc/key.pem"}
    assert "CERT PEM" not in repr(config)
