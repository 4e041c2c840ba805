"""Every input the engine checks before it reaches anything (a provider configuration, a DNS
server and its records), given a wrong type, an empty value or an unknown reference: a clear
error naming the field and what is expected, and no secret in it. The inputs that need a real
provider to be refused are in tests/lab/test_bad_input_lab.py."""

from __future__ import annotations

import pytest

import vimigrate

#: A socket path nothing listens on: every case below is refused before connecting.
SOCK = "unix:///nonexistent/vimigrate-test/docker.sock"
#: A documentation address (RFC 5737), never reached: the TLS files are checked first.
TCP = "tcp://192.0.2.10:2376"


@pytest.mark.parametrize(("config", "field"), [
    ({"name": "p", "docker_host": ""}, "docker_host"),
    ({"name": "p", "docker_host": "ftp://x"}, "docker_host"),
    ({"name": "p", "docker_host": None}, "provider.docker_host"),
    ({"name": 5, "docker_host": SOCK}, "provider.name"),
    ({"name": "p", "docker_host": SOCK, "allow_plain_tcp": "yes"}, "provider.allow_plain_tcp"),
    ({"name": "p", "docker_host": SOCK, "timeout_secs": -1}, "provider.timeout_secs"),
    ({"name": "p", "docker_host": SOCK, "public_address": 5}, "provider.public_address"),
    ({"name": "p", "docker_host": SOCK, "transfer_address": ["x"]}, "provider.transfer_address"),
    ({"name": "p", "docker_host": SOCK, "transfer_port": 70000}, "provider.transfer_port"),
    ({"name": "p", "docker_host": SOCK, "transfer_port": "any"}, "provider.transfer_port"),
    ({"name": "p", "docker_host": SOCK, "tls": {"ca": 1, "cert": "b", "key": "c"}}, "provider.tls.ca"),
    ({"name": "p", "docker_host": TCP,
      "tls": {"ca": "/nonexistent/ca.pem", "cert": "/nonexistent/c.pem", "key": "/nonexistent/k.pem"}}, "tls.ca"),
])
def test_provider_configuration(config, field):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config)
    assert caught.value.field == field, str(caught.value)
    assert f"invalid `{field}`: expected " in str(caught.value)


#: A DNS server nothing is asked of: every case below is refused before a query.
SERVER = "192.0.2.53:53"


@pytest.mark.parametrize(("server", "field"), [
    ({"kind": "bind"}, "server.kind"),
    ({"kind": "rfc2136", "server": "", "zone": "vi.test.", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0"}, "server"),
    ({"kind": "rfc2136", "server": SERVER, "zone": "vi.test", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0"}, "zone"),
    ({"kind": "rfc2136", "server": SERVER, "zone": "vi.test.", "tsig_key_name": "k"}, "tsig_secret"),
    ({"kind": "rfc2136", "server": SERVER, "zone": "vi.test.", "tsig_key_name": "k", "tsig_secret": "c2VjcmV0",
      "tsig_algorithm": "md5"}, "tsig_algorithm"),
    ({"kind": "powerdns", "api_url": "not a url", "server_id": "localhost", "zone": "vi.test.", "api_key": "k",
      "dns_server": SERVER}, "api_url"),
])
def test_dns_server(server, field):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.dns_plan(server, [])
    assert caught.value.field.endswith(field), str(caught.value)
    assert "c2VjcmV0" not in str(caught.value), "a secret in an error"


GOOD_SERVER = {"kind": "rfc2136", "server": SERVER, "zone": "vi.test.", "tsig_key_name": "vimigrate-lab",
               "tsig_secret": "c2VjcmV0"}


@pytest.mark.parametrize(("record", "field"), [
    ({"name": "", "rtype": "A", "ttl": 5, "value": "10.0.0.1"}, "name"),
    ({"name": "web.other.", "rtype": "A", "ttl": 5, "value": "10.0.0.1"}, "name"),
    ({"name": "web.vi.test.", "rtype": "MX", "ttl": 5, "value": "10.0.0.1"}, "rtype"),
    ({"name": "web.vi.test.", "rtype": "A", "ttl": -1, "value": "10.0.0.1"}, "ttl"),
    ({"name": "web.vi.test.", "rtype": "A", "ttl": 5, "value": "not-an-address"}, "value"),
])
def test_dns_records(record, field):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.dns_plan(GOOD_SERVER, [record])
    assert caught.value.field.split(".")[-1].split("]")[-1] == field or caught.value.field.endswith(field), \
        str(caught.value)
