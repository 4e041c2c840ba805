"""The native module: build, self-check, argument conversion, error mapping, and the GIL."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import vimigrate
from vimigrate import _native


def test_version_matches_package():
    assert vimigrate.version() == vimigrate.__version__ == _native.__version__
    assert vimigrate.version().count(".") == 2


def test_self_check_runs_the_runtime():
    report = vimigrate.self_check()
    assert report["runtime_ready"] is True
    assert report["engine_version"] == vimigrate.version()
    assert report["target"].endswith("-linux")


def test_plugin_yaml_ships_in_the_package():
    text = vimigrate.plugin_yaml_path().read_text()
    assert "vimigrate.nodes.Container" in text


def test_every_error_derives_from_one_base():
    for name in ("InvalidInputError", "ProviderUnavailableError", "NotFoundError", "ConflictError",
                 "ProviderUnsuitableError", "OperationFailedError", "AccessDeniedError", "MigrationFailedError"):
        assert issubclass(getattr(vimigrate, name), vimigrate.VimigrateError), name


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"name": "p", "docker_host": "http://x:1"}, "docker_host"),
        ({"name": "p", "docker_host": "tcp://10.0.0.1:2376"}, "tls"),
        ({"name": "", "docker_host": "unix:///x.sock"}, "name"),
        ({"name": "p", "docker_host": "unix:///x.sock", "timeout_secs": 0}, "timeout_secs"),
    ],
)
def test_bad_provider_config_names_the_field(config, field):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config)
    assert caught.value.field == field
    assert f"`{field}`" in str(caught.value)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"name": "p", "docker_host": 5}, "provider.docker_host"),
        ({"name": "p"}, "provider.docker_host"),
        ({"name": "p", "docker_host": "unix:///x", "timeout_secs": "soon"}, "provider.timeout_secs"),
        ({"name": "p", "docker_host": "unix:///x", "colour": "red"}, "provider.colour"),
        ({"name": "p", "docker_host": "unix:///x", "tls": {"ca": "a", "cert": "b"}}, "provider.tls.key"),
        ({"name": "p", "docker_host": "unix:///x", "tls": "certs"}, "provider.tls"),
    ],
)
def test_wrong_types_name_the_field(config, field):
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect(config)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value).startswith(f"invalid `{field}`: expected ")


def test_missing_socket_is_unavailable(tmp_path: Path):
    with pytest.raises(vimigrate.ProviderUnavailableError) as caught:
        vimigrate.Provider.connect({"name": "gone", "docker_host": f"unix://{tmp_path}/none.sock"})
    assert "provider `gone`: cannot connect" in str(caught.value)


def test_unreachable_provider_is_a_clear_error(tmp_path):
    with pytest.raises(vimigrate.ProviderUnavailableError, match="cannot connect"):
        vimigrate.Provider.connect({"name": "gone", "docker_host": f"unix://{tmp_path}/nothing.sock"})


class _SlowDockerHandler(BaseHTTPRequestHandler):
    """Answers the two calls a probe makes, each after a delay, like a busy daemon."""

    delay = 0.5

    def do_GET(self):
        time.sleep(self.delay)
        path = self.path.split("?")[0]
        if path.endswith("/version"):
            body = {"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12", "Os": "linux",
                    "Arch": "amd64", "KernelVersion": "6", "Experimental": True}
        elif path.endswith("/info"):
            body = {"DockerRootDir": "/var/lib/docker", "ContainersRunning": 0, "ExperimentalBuild": True}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_native_calls_release_the_gil(tmp_path: Path):
    """While a native call waits on the network, other Python threads run. The fake daemon is
    itself Python: were the GIL held, it could not answer and the call would time out."""
    socket_path = str(tmp_path / "docker.sock")
    server = _UnixHTTPServer(socket_path, _SlowDockerHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ticks = 0
    stop = threading.Event()

    def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.005)

    thread = threading.Thread(target=ticker)
    try:
        provider = vimigrate.Provider.connect(
            {"name": "slow", "docker_host": f"unix://{socket_path}", "timeout_secs": 10}
        )
        thread.start()
        started = time.monotonic()
        report = provider.probe()  # two requests, 0.5 s each
        elapsed = time.monotonic() - started
        seen = ticks
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    thread.join()
    assert report["api_version"] == "1.41" and report["experimental"] is True
    assert elapsed >= 1.0
    # A ticker sleeping 5 ms manages ~200 ticks a second when it can run; with the GIL held for
    # the whole call it would manage none until the call returned.
    assert seen >= 50, f"only {seen} ticks in {elapsed:.2f}s: the GIL was held during the call"


def test_conversion_error_reads_well():
    with pytest.raises(vimigrate.InvalidInputError) as caught:
        vimigrate.Provider.connect({"name": "p", "docker_host": "unix:///x", "timeout_secs": "soon"})
    assert str(caught.value) == 'invalid `provider.timeout_secs`: expected a non-negative integer, got string "soon"'
