"""provider-b's Docker API over TLS (dockerd --tlsverify on its public address, next to its unix
socket): the engine connects with the lab CA and a client certificate, refuses tcp:// without
TLS unless told otherwise, reports a wrong CA or an untrusted client certificate clearly, and
migrates a container to a provider reached over TLS."""

from __future__ import annotations

import json
import os
import stat
import uuid
from urllib.parse import urlsplit

import pytest
from framework.engine import connect, docker, on_both
from framework.lab import LabMissingError, Tls
from framework.process import run, wait_for
from framework.workloads import consecutive, counted, run_counter

import vimigrate


@pytest.fixture(scope="module")
def tls(lab) -> Tls:
    """providers.provider-b.tls of lab.json, its files checked to exist."""
    try:
        facts = lab.b.require_tls()
    except LabMissingError as missing:
        pytest.fail(str(missing))
    for key in ("ca", "cert", "key", "wrong_ca", "wrong_cert", "wrong_key"):
        if not os.path.isfile(getattr(facts, key)):
            pytest.fail(f"TLS file {key} missing at {getattr(facts, key)}; run `make lab-up`")
    return facts


def config(lab, **tls_files) -> dict:
    return lab.b.tls_config(tls=lab.b.require_tls().files(**tls_files), timeout_secs=20)


def endpoint(tls: Tls) -> str:
    return tls.docker_host


def test_tls_material_is_paths_only_with_private_keys(lab, tls):
    # The daemon's TLS port is on provider-b's public address.
    assert urlsplit(tls.docker_host).hostname == lab.b.public_address, tls.docker_host
    assert "PRIVATE KEY" not in lab.text(), "lab.json holds paths, never key material"
    for key in (tls.key, tls.wrong_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    # The server certificate names provider-b's address and name; both client certificates
    # chain to their own CA only.
    server = os.path.join(os.path.dirname(tls.ca), "server-cert.pem")
    sans = run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", server]).stdout
    assert f"IP Address:{lab.b.public_address}" in sans and f"DNS:{lab.b.name}" in sans, sans
    assert run(["openssl", "verify", "-CAfile", tls.ca, tls.cert]).returncode == 0
    assert run(["openssl", "verify", "-CAfile", tls.wrong_ca, tls.cert]).returncode != 0


def test_right_ca_and_client_certificate_reach_the_daemon(lab, tls):
    provider = vimigrate.Provider.connect(config(lab))
    assert provider.api_version == "1.41"
    report = provider.probe()
    assert report["endpoint"] == f"{endpoint(tls)} (TLS)"
    assert report["api_version"] == "1.41" and report["experimental"] is True
    # The same daemon as provider-b's unix socket.
    assert report["docker_root_dir"] == lab.b.data_root


def test_wrong_ca_is_a_clear_error_naming_the_endpoint(lab, tls):
    # Not "unavailable": retrying with the same CA cannot help.
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.Provider.connect(config(lab, ca=tls.wrong_ca))
    message = str(caught.value)
    assert "provider-b" in message and endpoint(tls) in message, message
    # rustls refused the daemon's certificate: it was not issued by the given CA.
    assert "invalid peer certificate: UnknownIssuer" in message, message


def test_client_certificate_of_another_ca_is_refused_by_the_daemon(lab, tls):
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.Provider.connect(config(lab, cert=tls.wrong_cert, key=tls.wrong_key))
    message = str(caught.value)
    assert "provider-b" in message and endpoint(tls) in message, message
    assert "BadCertificate" in message, message


def test_missing_client_certificate_file_is_named(lab, tls, tmp_path):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config(lab, cert=str(tmp_path / "absent.pem")))
    assert caught.value.field == "tls.cert"
    assert "absent.pem" in str(caught.value)


def test_tcp_without_tls_is_invalid_input(lab, tls):
    plain = {k: v for k, v in config(lab).items() if k != "tls"}
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(plain)
    assert caught.value.field == "tls"
    assert "allow_plain_tcp" in str(caught.value), str(caught.value)


def test_plain_tcp_against_the_tls_port_is_a_clear_error(lab, tls):
    plain = {k: v for k, v in config(lab).items() if k != "tls"}
    with pytest.raises(vimigrate.ProviderUnavailableError) as caught:
        vimigrate.Provider.connect({**plain, "allow_plain_tcp": True})
    message = str(caught.value)
    assert f"{endpoint(tls)} (plain)" in message, message
    assert "Client sent an HTTP request to an HTTPS server" in message, message


def test_counter_migrates_from_a_unix_socket_to_provider_b_over_tls(lab, tls):
    name = f"vmtest-tls-{uuid.uuid4().hex[:8]}"
    a = connect(lab, "provider-a")
    b = vimigrate.Provider.connect({**config(lab), "timeout_secs": 60})
    try:
        run_counter(lab, name)
        report = vimigrate.migrate(a, b, {"container": name})
        assert report["stats"]["downtime_ms"] > 0
        assert a.inspect_container(name) is None
        assert b.inspect_container(name)["running"] is True
        # Seen through provider-b's unix socket: the same container, running, counting on from A.
        state = json.loads(docker(lab, "provider-b", "inspect", "-f", "{{json .State}}", name))
        assert state["Running"] is True

        def counted_on_b():
            seen = counted(lab, "provider-b", name)
            return seen if len(seen) >= 2 else None

        on_b = wait_for(counted_on_b, what="the counter on B")
        assert on_b[0] >= 3 and consecutive(on_b), on_b
    finally:
        on_both(lab, "rm", "-f", name)
