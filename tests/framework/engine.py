"""The engine and the docker CLI on the lab: providers connected with the lab's configurations,
migrations through the Python API or the command line, and what a test looks at on a provider
afterwards (containers, helpers, locks, checkpoints)."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import vimigrate
from vimigrate.shapes import HealReport

from .lab import ROOT, Lab
from .process import run

#: Debian's Docker 20.10 client; /usr/local/bin/docker may be a newer one these daemons refuse.
DOCKER = "/usr/bin/docker"
#: The two providers every lab test moves between, as lab.json names them.
BOTH = ("provider-a", "provider-b")
#: The label vimigrate puts on what it manages (and heal and the demo look for).
MANAGED = "io.vimigrate.managed=true"


def connect(lab: Lab, name: str, timeout: int = 60, **fields: Any) -> vimigrate.Provider:
    """The engine connected to a lab provider through its unix socket."""
    return vimigrate.Provider.connect(lab.provider(name).config(timeout_secs=timeout, **fields))


def connect_both(lab: Lab, timeout: int = 60) -> tuple[vimigrate.Provider, vimigrate.Provider]:
    """provider-a and provider-b, connected."""
    return connect(lab, "provider-a", timeout), connect(lab, "provider-b", timeout)


def heal(lab: Lab, name: str, providers: tuple[str, ...] = BOTH, restart_from_image: bool = False) -> HealReport:
    """The engine's heal of container `name` over `providers` (provider-a and provider-b)."""
    return vimigrate.heal([connect(lab, p) for p in providers], name, restart_from_image=restart_from_image)


def docker_at(host: str, *args: str, check: bool = True) -> str:
    """The docker CLI against the daemon at `host`; asserts success unless `check` is false."""
    env = dict(os.environ, DOCKER_API_VERSION="1.41")
    result = run([DOCKER, "-H", host, *args], env=env, timeout=120)
    if check:
        assert result.returncode == 0, f"docker -H {host} {' '.join(args)}: {result.stderr}"
    return result.stdout


def docker(lab: Lab, provider: str, *args: str, check: bool = True) -> str:
    """The docker CLI against one of the lab's providers."""
    return docker_at(lab.provider(provider).docker_host, *args, check=check)


def on_both(lab: Lab, *args: str) -> None:
    """The same docker command on both providers, whatever it finds (cleanup)."""
    for provider in BOTH:
        docker(lab, provider, *args, check=False)


def root_dir(lab: Lab, provider: str) -> Path:
    """The provider's Docker root directory, as its daemon reports it."""
    return Path(docker(lab, provider, "info", "-f", "{{.DockerRootDir}}").strip())


def container_ids(lab: Lab, provider: str, *filters: str, running_only: bool = False, check: bool = True) -> list[str]:
    """Ids of the containers on `provider` matching every `filters` (docker ps --filter)."""
    args = ["ps", "-q"] if running_only else ["ps", "-aq"]
    for spec in filters:
        args += ["--filter", spec]
    return docker(lab, provider, *args, check=check).split()


def helpers(lab: Lab, provider: str, name: str | None = None, check: bool = True) -> list[str]:
    """The engine's helper containers on `provider` (those working for container `name`)."""
    label = f"io.vimigrate.helper.for={name}" if name else "io.vimigrate.helper=true"
    return container_ids(lab, provider, f"label={label}", check=check)


def checkpoints(lab: Lab, provider: str, name: str) -> list[str]:
    """The checkpoints Docker lists for container `name` on `provider`."""
    return docker(lab, provider, "checkpoint", "ls", name).strip().splitlines()[1:]


def running_on(lab: Lab, name: str, providers: tuple[str, ...] = BOTH) -> list[str]:
    """Those of `providers` (provider-a and provider-b) where container `name` runs."""
    return [p for p in providers if container_ids(lab, p, f"name=^/{name}$", running_only=True, check=False)]


def cli_migrate(lab: Lab, name: str, *, public_addresses: bool = True, source: str = "provider-a",
                destination: str = "provider-b") -> list[str]:
    """`vimigrate migrate` of container `name` from `source` to `destination`, as a user types it."""
    cmd = [sys.executable, "-m", "vimigrate", "migrate", name]
    for prefix, provider in (("from", lab.provider(source)), ("to", lab.provider(destination))):
        cmd += [f"--{prefix}-name", provider.name, f"--{prefix}-docker-host", provider.docker_host]
        if public_addresses:
            cmd += [f"--{prefix}-public-address", provider.public_address]
    return cmd


def start_cli_migrate(lab: Lab, name: str, source: str = "provider-a",
                      destination: str = "provider-b") -> subprocess.Popen[str]:
    """`vimigrate migrate` running in the background, its phases readable on stderr."""
    return subprocess.Popen(cli_migrate(lab, name, source=source, destination=destination), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_cli_migrate_at(broker: subprocess.Popen[str], phase: str) -> None:
    """Kills the background `vimigrate migrate` as soon as it announces `phase`, and waits for
    it; asserts that it died of the kill."""
    assert broker.stderr is not None
    for line in broker.stderr:
        if line.startswith(f"{phase}..."):
            broker.kill()
            break
    broker.wait(timeout=30)
    assert broker.returncode == -signal.SIGKILL


class HostFiles:
    """Watches both providers' container directories while migrations run, recording every
    directive seen with its mode and its directory's mode, and every checkpoint directory with
    its mode (they hold process memory and the transfer's secrets while they exist)."""

    def __init__(self, lab: Lab) -> None:
        self.roots = [root_dir(lab, p) for p in BOTH]
        self.directives: set[tuple[str, int, int]] = set()
        self.checkpoints: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                # A file may go between the listing and the look at it: it was seen, or not.
                for d in root.glob("containers/*/vimigrate/directive.json"):
                    with contextlib.suppress(FileNotFoundError):
                        self.directives.add((str(d), stat.S_IMODE(d.stat().st_mode),
                                             stat.S_IMODE(d.parent.stat().st_mode)))
                for c in root.glob("containers/*/checkpoints/*"):
                    with contextlib.suppress(FileNotFoundError):
                        self.checkpoints.add((str(c), stat.S_IMODE(c.stat().st_mode)))
            self._stop.wait(0.005)

    def stop(self) -> HostFiles:
        self._stop.set()
        self._thread.join()
        return self
