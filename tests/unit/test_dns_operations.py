"""The DNS record operations against Cloudify's mock context, with the engine faked: where the
record points, which TTL, and that secrets stay out of runtime properties and messages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cloudify.exceptions import NonRecoverableError, RecoverableError
from cloudify.mocks import MockCloudifyContext, MockNodeContext, MockNodeInstanceContext
from cloudify.state import current_ctx

import vimigrate
from vimigrate.operations import dns

SECRET = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw=="


class FakeDns:
    def __init__(self, fail: Exception | None = None):
        self.applied: list = []
        self.answers: dict = {}
        self.fail = fail

    def dns_plan(self, server, desired, delete=()):
        if self.fail:
            raise self.fail
        changes = [{"name": r["name"], "rtype": r["rtype"], "before": None, "after": [r["value"], r["ttl"]]}
                   for r in desired]
        return changes + [{"name": n, "rtype": t, "before": ["x", 1], "after": None} for n, t in delete]

    def dns_apply(self, server, changes):
        self.applied.append((server, changes))
        for change in changes:
            self.answers[change["name"]] = [] if change["after"] is None else [tuple(change["after"])]

    def dns_lookup(self, server, name, rtype):
        return self.answers.get(name, [])


@pytest.fixture
def fake(monkeypatch):
    engine = FakeDns()
    shim = SimpleNamespace(**{n: getattr(vimigrate._native, n) for n in dir(vimigrate._native)
                              if not n.startswith("__")})
    for name in ("dns_plan", "dns_apply", "dns_lookup"):
        setattr(shim, name, getattr(engine, name))
    monkeypatch.setattr(dns, "_native", shim)
    yield engine
    current_ctx.clear()


def record_ctx(tmp_path, public="192.0.2.11", runtime=None):
    key = tmp_path / "tsig.key"
    key.write_text(f'key "vimigrate-lab" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    container = SimpleNamespace(
        node=MockNodeContext(id="web", properties={}),
        instance=MockNodeInstanceContext(id="web_1", runtime_properties={
            "provider_config": {"name": "provider-a", "public_address": public}}))
    relationship = SimpleNamespace(target=container, type=dns.NAMES_CONTAINER, type_hierarchy=[dns.NAMES_CONTAINER])
    ctx = MockCloudifyContext(node_id="web_dns_1", node_name="web_dns", deployment_id="d", properties={
        "name": "web", "zone": "vi.test.", "type": "A", "ttl": 60, "migration_ttl": 5,
        "server": {"kind": "rfc2136", "server": "127.0.0.1:5300", "tsig_key_name": "vimigrate-lab",
                   "tsig_key_file": str(key)}}, runtime_properties=runtime if runtime is not None else {},
        relationships=[relationship])
    current_ctx.set(ctx)
    return ctx


def test_create_points_the_record_at_the_containers_provider(fake, tmp_path):
    ctx = record_ctx(tmp_path)
    dns.create()
    server, changes = fake.applied[0]
    assert server["tsig_secret"] == SECRET, "the key file's secret reaches the engine"
    assert changes[0]["name"] == "web.vi.test." and changes[0]["after"] == ["192.0.2.11", 60]
    rp = ctx.instance.runtime_properties
    assert rp == {"fqdn": "web.vi.test.", "type": "A", "value": "192.0.2.11", "ttl": 60}
    assert SECRET not in repr(rp)


def test_switch_follows_the_container_with_the_given_ttl(fake, tmp_path):
    ctx = record_ctx(tmp_path, public="192.0.2.12", runtime={"value": "192.0.2.11"})
    dns.switch(ttl=5)
    assert fake.applied[-1][1][0]["after"] == ["192.0.2.12", 5]
    assert ctx.instance.runtime_properties["value"] == "192.0.2.12"


def test_unreachable_server_says_where_the_record_still_points(fake, tmp_path):
    fake.fail = vimigrate.ProviderUnavailableError("dns server 127.0.0.1:5300 unreachable")
    record_ctx(tmp_path, public="192.0.2.12", runtime={"value": "192.0.2.11"})
    with pytest.raises(RecoverableError) as caught:
        dns.switch(ttl=5)
    assert "still points at 192.0.2.11" in str(caught.value) and "runs at 192.0.2.12" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_unknown_server_kind_is_named(fake, tmp_path):
    with pytest.raises(NonRecoverableError, match="server.kind"):
        dns.server_config({"zone": "vi.test.", "server": {"kind": "route53"}})
