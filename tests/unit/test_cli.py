"""The command line without Cloudify: flags are the engine's field names, those not given are
left to the engine's defaults, and errors come back as exit statuses with the engine's message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vimigrate import cli


def _config(*argv: str, prefix: str = "") -> dict:
    return dict(cli._provider_config(cli.build_parser().parse_args(list(argv)), prefix))


def test_flags_not_given_are_left_to_the_engine():
    assert _config("probe", "--docker-host", "unix:///run/a.sock") == {"name": "provider",
                                                                       "docker_host": "unix:///run/a.sock"}


def test_every_provider_field_has_its_flag():
    config = _config("probe", "--name", "p", "--docker-host", "tcp://192.0.2.10:2376", "--tls-ca", "/c/ca.pem",
                     "--tls-cert", "/c/cert.pem", "--tls-key", "/c/key.pem", "--allow-plain-tcp",
                     "--public-address", "192.0.2.10", "--transfer-address", "10.0.0.7", "--transfer-port", "2377",
                     "--timeout-secs", "30")
    assert config == {"name": "p", "docker_host": "tcp://192.0.2.10:2376", "allow_plain_tcp": True,
                      "public_address": "192.0.2.10", "transfer_address": "10.0.0.7", "transfer_port": 2377,
                      "timeout_secs": 30, "tls": {"ca": "/c/ca.pem", "cert": "/c/cert.pem", "key": "/c/key.pem"}}


@pytest.mark.parametrize("flag", ["--timeout-secs", "--timeout"])
def test_one_timeout_for_both_providers_of_a_migration(flag):
    argv = ["migrate", "web", "--from-docker-host", "unix:///a.sock", "--to-docker-host", "unix:///b.sock", flag, "7"]
    assert _config(*argv, prefix="from_")["timeout_secs"] == 7 == _config(*argv, prefix="to_")["timeout_secs"]
    assert _config(*argv, prefix="from_")["name"] == "source" and _config(*argv, prefix="to_")["name"] == "destination"


def test_bad_input_exits_2_naming_the_field(capsys):
    assert cli.main(["probe", "--docker-host", "ftp://x"]) == 2
    assert "invalid `docker_host`" in capsys.readouterr().err


def test_an_unreachable_provider_exits_1(tmp_path, capsys):
    assert cli.main(["probe", "--name", "gone", "--docker-host", f"unix://{tmp_path}/none.sock"]) == 1
    assert "provider `gone`: cannot connect" in capsys.readouterr().err


def test_heal_restarts_from_the_image_only_when_asked():
    argv = ["heal", "web", "--from-docker-host", "unix:///a.sock", "--to-docker-host", "unix:///b.sock"]
    assert cli.build_parser().parse_args(argv).restart_from_image is False
    assert cli.build_parser().parse_args([*argv, "--restart-from-image"]).restart_from_image is True


def test_heal_says_how_the_container_came_back(monkeypatch, capsys):
    seen = {}

    def fake_heal(providers, name, *, restart_from_image=False):
        seen["restart_from_image"] = restart_from_image
        return {"container": name, "runs_on": "provider-b", "resumed": False, "restarted_from_image": True,
                "removed": ["provider-a: container web (exited, with its checkpoints)"]}

    fake = SimpleNamespace(**{name: getattr(cli._native, name) for name in dir(cli._native)
                              if not name.startswith("__")})
    fake.heal = fake_heal
    fake.Provider = SimpleNamespace(connect=lambda config: config)
    monkeypatch.setattr(cli, "_native", fake)
    argv = ["heal", "web", "--from-docker-host", "unix:///a.sock", "--to-docker-host", "unix:///b.sock",
            "--restart-from-image"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert seen == {"restart_from_image": True}
    assert "web runs on provider-b (restarted from its image: its process state was lost)" in err, err
    assert cli.heal_how({"container": "web", "runs_on": "a", "resumed": True, "restarted_from_image": False,
                         "removed": []}) == " (restored from its checkpoint)"
