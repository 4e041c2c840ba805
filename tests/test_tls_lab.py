"""provider-b's Docker API over TLS (dockerd --tlsverify on tcp://10.231.0.12:2376, next to its
unix socket): the engine connects with the lab CA and a client certificate, refuses tcp:// without
TLS unless told otherwise, reports a wrong CA or an untrusted client certificate clearly, and
migrates a container to a provider reached over TLS."""

from __future__ import annotations

import json
import os
import stat
import uuid

import pytest

import vimigrate
from conftest import LAB_JSON, docker, numbers, run, wait_for

pytestmark = pytest.mark.lab

ENDPOINT = "tcp://10.231.0.12:2376"


@pytest.fixture(scope="module")
def tls(lab: dict) -> dict:
    """providers.provider-b.tls of lab.json, its files checked to exist."""
    facts = lab["providers"]["provider-b"].get("tls")
    if not facts:
        pytest.fail("lab.json has no providers.provider-b.tls: the lab predates TLS; run `make lab-up`")
    for key in ("ca", "cert", "key", "wrong_ca", "wrong_cert", "wrong_key"):
        if not os.path.isfile(facts[key]):
            pytest.fail(f"TLS file {key} missing at {facts[key]}; run `make lab-up`")
    return facts


def config(lab: dict, tls: dict, **tls_files) -> dict:
    files = {"ca": tls["ca"], "cert": tls["cert"], "key": tls["key"], **tls_files}
    return {"name": "provider-b", "docker_host": tls["docker_host"], "tls": files,
            "public_address": lab["providers"]["provider-b"]["public_address"], "timeout_secs": 20}








def test_tls_material_is_paths_only_with_private_keys(tls):
    assert tls["docker_host"] == ENDPOINT
    assert "PRIVATE KEY" not in LAB_JSON.read_text(), "lab.json holds paths, never key material"
    for key in ("key", "wrong_key"):
        assert stat.S_IMODE(os.stat(tls[key]).st_mode) == 0o600, tls[key]
    # The server certificate names provider-b's address and name; both client certificates
    # chain to their own CA only.
    server = os.path.join(os.path.dirname(tls["ca"]), "server-cert.pem")
    sans = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", server]).stdout
    assert "IP Address:10.231.0.12" in sans and "DNS:provider-b" in sans, sans
    assert run(["openssl", "verify", "-CAfile", tls["ca"], tls["cert"]]).returncode == 0
    assert run(["openssl", "verify", "-CAfile", tls["wrong_ca"], tls["cert"]]).returncode != 0


def test_right_ca_and_client_certificate_reach_the_daemon(lab, tls):
    provider = vimigrate.Provider.connect(config(lab, tls))
    assert provider.api_version == "1.41"
    report = provider.probe()
    assert report["endpoint"] == f"{ENDPOINT} (TLS)"
    assert report["api_version"] == "1.41" and report["experimental"] is True
    # The same daemon as provider-b's unix socket.
    assert report["docker_root_dir"] == lab["providers"]["provider-b"]["data_root"]


def test_wrong_ca_is_a_clear_error_naming_the_endpoint(lab, tls):
    # Not "unavailable": retrying with the same CA cannot help.
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.Provider.connect(config(lab, tls, ca=tls["wrong_ca"]))
    message = str(caught.value)
    assert "provider-b" in message and ENDPOINT in message, message
    # rustls refused the daemon's certificate: it was not issued by the given CA.
    assert "invalid peer certificate: UnknownIssuer" in message, message


def test_client_certificate_of_another_ca_is_refused_by_the_daemon(lab, tls):
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.Provider.connect(config(lab, tls, cert=tls["wrong_cert"], key=tls["wrong_key"]))
    message = str(caught.value)
    assert "provider-b" in message and ENDPOINT in message, message
    assert "BadCertificate" in message, message


def test_missing_client_certificate_file_is_named(lab, tls, tmp_path):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config(lab, tls, cert=str(tmp_path / "absent.pem")))
    assert caught.value.field == "tls.cert"
    assert "absent.pem" in str(caught.value)


def test_tcp_without_tls_is_invalid_input(lab, tls):
    plain = {k: v for k, v in config(lab, tls).items() if k != "tls"}
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(plain)
    assert caught.value.field == "tls"
    assert "allow_plain_tcp" in str(caught.value), str(caught.value)


def test_plain_tcp_against_the_tls_port_is_a_clear_error(lab, tls):
    plain = {k: v for k, v in config(lab, tls).items() if k != "tls"}
    with pytest.raises(vimigrate.ProviderUnavailableError) as caught:
        vimigrate.Provider.connect({**plain, "allow_plain_tcp": True})
    message = str(caught.value)
    assert f"{ENDPOINT} (plain)" in message, message
    assert "Client sent an HTTP request to an HTTPS server" in message, message


def test_counter_migrates_from_a_unix_socket_to_provider_b_over_tls(lab, tls):
    name = f"vmtest-tls-{uuid.uuid4().hex[:8]}"
    facts_a = lab["providers"]["provider-a"]
    a = vimigrate.Provider.connect({"name": "provider-a", "docker_host": facts_a["docker_host"],
                                    "public_address": facts_a["public_address"], "timeout_secs": 60})
    b = vimigrate.Provider.connect({**config(lab, tls), "timeout_secs": 60})
    try:
        docker(lab, "provider-a", "run", "-d", "--name", name, "--label", "io.vimigrate.managed=true",
               lab["images"]["counter"])
        wait_for(lambda: len(numbers(docker(lab, "provider-a", "logs", name))) >= 3, what="the counter on A")
        report = vimigrate.migrate(a, b, {"container": name})
        assert report["stats"]["downtime_ms"] > 0
        assert a.inspect_container(name) is None
        assert b.inspect_container(name)["running"] is True
        # Seen through provider-b's unix socket: the same container, running, counting on from A.
        state = json.loads(docker(lab, "provider-b", "inspect", "-f", "{{json .State}}", name))
        assert state["Running"] is True
        def counted_on_b():
            seen = numbers(docker(lab, "provider-b", "logs", name))
            return seen if len(seen) >= 2 else None

        on_b = wait_for(counted_on_b, what="the counter on B")
        assert on_b[0] >= 3 and on_b == list(range(on_b[0], on_b[0] + len(on_b))), on_b
    finally:
        for provider in ("provider-a", "provider-b"):
            docker(lab, provider, "rm", "-f", name, check=False)
