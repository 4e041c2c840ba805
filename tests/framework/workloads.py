"""The workloads the tests migrate, and how each proves it moved intact: a counter (its state is
the next number it prints: a restore goes on from there, a restart begins at 0 again), Redis with
N keys, and the lab's web application (a visit count kept in Redis, served over HTTP)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
import uuid

from .engine import MANAGED, docker
from .lab import Lab
from .process import answers, wait_for

# --- the counter -------------------------------------------------------------------------------

#: A shell loop printing 0, 1, 2, ... every 0.2 s.
FAST_COUNT = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done"


def numbers(logs: str) -> list[int]:
    """The numbers a counter container printed."""
    return [int(line) for line in logs.split() if line.strip().isdigit()]


def counted(lab: Lab, provider: str, name: str) -> list[int]:
    """What counter `name` has printed on `provider` so far."""
    return numbers(docker(lab, provider, "logs", name))


def consecutive(seq: list[int]) -> bool:
    """Whether `seq` counts on by one without a gap or a repeat (a restore, not a restart)."""
    return bool(seq) and seq == list(range(seq[0], seq[0] + len(seq)))


def run_counter(lab: Lab, name: str, *docker_args: str, command: list[str] | None = None, image: str | None = None,
                provider: str = "provider-a", runtime: str | None = None, at_least: int = 3,
                timeout: float = 15.0) -> None:
    """A counter (the lab's counter image, or `image`/`command`) running on `provider`, under
    `runtime` when given, once it printed `at_least` numbers."""
    runtime_args = ["--runtime", runtime] if runtime else []
    docker(lab, provider, "run", "-d", "--name", name, *runtime_args, "--label", MANAGED, *docker_args,
           image or lab.images.counter, *(command or []))
    wait_for(lambda: len(counted(lab, provider, name)) >= at_least, timeout=timeout, what="the counter to count")


def run_busy_counter(lab: Lab, name: str, mib: int = 0, provider: str = "provider-a", kind: str = "random",
                     dirty_percent: int = 0, docker_args: tuple[str, ...] = ()) -> None:
    """A counter under the vimigrate runtime printing one number every 0.2 s, next to a process
    holding `mib` MiB of touched memory (the lab's web application: a longer dump and
    transfer): `random` (incompressible) or `text` (JSON-like records, compressible), of which
    it rewrites `dirty_percent` % every second."""
    if mib:
        image = lab.images.web
        env = f"MEM_MIB={mib} MEM_KIND={kind} DIRTY_PERCENT={dirty_percent}"
        script = f"{env} REDIS_ADDR=127.0.0.1:1 /usr/local/bin/vimigrate-labapp >/dev/null 2>&1 & {FAST_COUNT}"
    else:
        image, script = lab.images.counter, FAST_COUNT
    run_counter(lab, name, *docker_args, "--entrypoint", "/bin/sh", image=image, command=["-c", script],
                provider=provider, runtime="vimigrate", at_least=3 + mib // 50, timeout=30)


def count_on(lab: Lab, provider: str, name: str, seconds: float = 2.5) -> tuple[list[int], list[int]]:
    """What counter `name` on `provider` printed before and after `seconds` more."""
    before = counted(lab, provider, name)
    time.sleep(seconds)
    return before, counted(lab, provider, name)


# --- Redis -------------------------------------------------------------------------------------


def redis(address: str, port: int, commands: list[list[str]]) -> list[bytes]:
    """Sends commands pipelined and reads one reply line (plus bulk payload) per command."""
    payload = b"".join(
        b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in cmd)
        for cmd in commands)
    replies: list[bytes] = []
    with socket.create_connection((address, port), timeout=10) as conn:
        conn.sendall(payload)
        reader = conn.makefile("rb")
        for _ in commands:
            line = reader.readline()
            if line.startswith(b"$") and line != b"$-1\r\n":
                replies.append(reader.read(int(line[1:]) + 2)[:-2])
            else:
                replies.append(line.strip())
    return replies


def wait_for_redis(address: str, port: int, what: str) -> None:
    wait_for(lambda: answers(lambda: redis(address, port, [["PING"]]) == [b"+PONG"]), what=what)


def redis_with_keys(lab: Lab, name: str, port: int, count: int = 10_000,
                    runtime: str | None = None) -> list[tuple[str, str]]:
    """Redis on provider-a, published on `port`, holding `count` keys of unique values; the
    keys and values."""
    runtime_args = ["--runtime", runtime] if runtime else []
    docker(lab, "provider-a", "run", "-d", "--name", name, *runtime_args, "--label", MANAGED,
           "-p", f"{port}:6379", lab.images.redis)
    wait_for_redis(lab.a.public_address, port, "redis on A")
    keys = [(f"key:{i}", f"value-{i}-{uuid.uuid4().hex}") for i in range(count)]
    assert set(redis(lab.a.public_address, port, [["SET", k, v] for k, v in keys])) == {b"+OK"}
    return keys


def assert_redis_holds(address: str, port: int, keys: list[tuple[str, str]]) -> None:
    """Redis at `address:port` answers with exactly `keys`, every value intact."""
    wait_for_redis(address, port, f"redis at {address}")
    assert redis(address, port, [["DBSIZE"]]) == [b":%d" % len(keys)]
    assert redis(address, port, [["GET", k] for k, _ in keys]) == [v.encode() for _, v in keys]


# --- the web application (visit count in Redis) ------------------------------------------------


def web_get(address: str, port: int, path: str = "/", timeout: float = 20.0) -> str:
    """The web application's answer at `path`, retried until it answers within `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    # No proxy: the lab's addresses are local, whatever *_proxy the environment sets.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        try:
            with opener.open(f"http://{address}:{port}{path}", timeout=3) as response:
                return str(response.read().decode())
        except OSError as err:
            last = err
            time.sleep(0.2)
    raise AssertionError(f"http://{address}:{port}{path} never answered: {last}")


def visits(text: str) -> int:
    """The visit count in one of the web application's answers."""
    return int(text.split("visits=")[1].split()[0])


def visits_at(address: str, port: int) -> int:
    """One visit (it counts it) and the count answered."""
    return visits(web_get(address, port))


def visits_now(address: str, port: int) -> int | None:
    """One visit, or None when the web application does not answer it yet."""
    try:
        return visits(web_get(address, port, timeout=3))
    except AssertionError:
        return None


def web_stats(address: str, port: int) -> dict[str, object]:
    """The web application's /stats: its Redis address, how often it connected, its peer."""
    stats = json.loads(web_get(address, port, "/stats"))
    assert isinstance(stats, dict), stats
    return stats
