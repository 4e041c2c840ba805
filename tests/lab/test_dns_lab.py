"""The native DNS engine (dns_plan / dns_apply / dns_lookup) against the lab's servers: BIND9 with
RFC 2136 + TSIG, and PowerDNS through its HTTP API. Fails, naming what is missing, when the lab
has no such server."""

from __future__ import annotations

import os
import time

import pytest
from framework.lab import LabMissingError

import vimigrate

WRONG_TSIG = "d3JvbmctdnNlY3JldC13aGljaC1tdXN0LW5vdC1sZWFrIQ=="
WRONG_KEY = "wrong-api-key-that-must-not-leak"


@pytest.fixture(scope="module")
def bind(lab) -> dict:
    """The engine's configuration of the lab's BIND9."""
    try:
        return lab.dns.engine_config()
    except LabMissingError as missing:
        pytest.fail(str(missing))


@pytest.fixture(scope="module")
def powerdns(lab) -> dict:
    """The engine's configuration of the lab's PowerDNS."""
    try:
        return lab.dns.require_powerdns().engine_config()
    except LabMissingError as missing:
        pytest.fail(str(missing))


def unique(server: dict, tag: str) -> str:
    return f"{tag}-{os.getpid()}-{time.time_ns() % 10**9}.{server['zone']}"


def a(name: str, value: str) -> dict:
    return {"name": name, "rtype": "A", "ttl": 60, "value": value}


def lifecycle(server: dict, tag: str) -> None:
    name = unique(server, tag)
    changes = vimigrate.dns_plan(server, [a(name, "127.0.0.20")])
    assert len(changes) == 1 and changes[0]["before"] is None, changes
    vimigrate.dns_apply(server, changes)
    assert vimigrate.dns_lookup(server, name, "A") == [("127.0.0.20", 60)]
    assert vimigrate.dns_plan(server, [a(name, "127.0.0.20")]) == [], "applying twice changes nothing"

    moved = vimigrate.dns_plan(server, [a(name, "127.0.0.21")])
    assert [tuple(c["before"]) for c in moved] == [("127.0.0.20", 60)], moved
    vimigrate.dns_apply(server, moved)
    assert vimigrate.dns_lookup(server, name, "A") == [("127.0.0.21", 60)]

    removal = vimigrate.dns_plan(server, [], [[name, "A"]])
    assert len(removal) == 1 and removal[0]["after"] is None, removal
    vimigrate.dns_apply(server, removal)
    assert vimigrate.dns_lookup(server, name, "A") == []
    assert vimigrate.dns_plan(server, [], [(name, "A")]) == []


def test_bind_record_lifecycle(bind: dict) -> None:
    lifecycle(bind, "py-rfc2136")


def test_bind_wrong_tsig_secret_is_access_denied_without_leaking_it(bind: dict) -> None:
    server = {**bind, "tsig_secret": WRONG_TSIG}
    name = unique(server, "py-badkey")
    changes = vimigrate.dns_plan(server, [a(name, "127.0.0.22")])
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.dns_apply(server, changes)
    message = str(caught.value)
    assert bind["server"] in message, message
    assert WRONG_TSIG not in message and bind["tsig_secret"] not in message
    assert vimigrate.dns_lookup(bind, name, "A") == []


def test_unreachable_server_is_unavailable(bind: dict) -> None:
    server = {**bind, "server": "127.0.0.1:1", "timeout_secs": 2}
    with pytest.raises(vimigrate.ProviderUnavailableError) as caught:
        vimigrate.dns_plan(server, [a(unique(server, "py-down"), "127.0.0.23")])
    assert "127.0.0.1:1" in str(caught.value)
    assert bind["tsig_secret"] not in str(caught.value)


def test_bad_input_names_the_field(bind: dict) -> None:
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.dns_plan(bind, [a("web.elsewhere.", "127.0.0.1")])
    assert caught.value.field == "desired[0].name"
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.dns_plan({**bind, "tsig_secret": "!!not base64!!"}, [])
    assert caught.value.field == "server.tsig_secret"
    assert "!!not base64!!" not in str(caught.value)


def test_powerdns_record_lifecycle(powerdns: dict) -> None:
    lifecycle(powerdns, "py-powerdns")


def test_powerdns_wrong_api_key_is_access_denied_without_leaking_it(powerdns: dict) -> None:
    server = {**powerdns, "api_key": WRONG_KEY}
    changes = vimigrate.dns_plan(server, [a(unique(server, "py-pdns-badkey"), "127.0.0.24")])
    with pytest.raises(vimigrate.AccessDeniedError) as caught:
        vimigrate.dns_apply(server, changes)
    message = str(caught.value)
    assert powerdns["api_url"].rstrip("/") in message, message
    assert WRONG_KEY not in message and powerdns["api_key"] not in message
