"""Soak: the example virtual infrastructure (web server + Redis, blueprints/webapp.yaml) migrated
back and forth N times with `cfy` in local mode while a client writes and reads throughout.

The client sends GET / to each provider's public address from two writers each, as fast as answers come:
each answer is a write (the visit count in Redis goes up by one) and a read (the count it
returns). A write is lost if an answered count is not above every count answered before, or if
the final count is below the last one answered. Prints, per migration, where the service went,
the engine's downtime of each container and the longest gap the client saw; fails (exit 1) on a
lost write, a failed migration or a container left anywhere.

Usage: .venv/bin/python scripts/soak.py [--migrations 20] [--order group|sequential]   (make soak: 20
migrations, each moving both containers as one group, the workflow's default)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFY = str(ROOT / ".venv/bin/cfy")
PORT = 18400


class Client:
    """Writes (GET / increments the visit count) and reads (the count answered) continuously."""

    def __init__(self, addresses: list[str]):
        self.addresses = addresses
        self.answers: list[tuple[float, int]] = []
        self.errors = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # Two writers per address: one stuck on a request to a frozen server (up to the read
        # timeout) does not hide the others' answers, and no writer waits on one address before
        # trying the other, so the longest gap is the service's, not a client timeout's.
        self.threads = [threading.Thread(target=self.run, args=(a,), daemon=True) for a in addresses for _ in range(2)]

    def visit(self, address: str) -> int | None:
        try:
            with socket.create_connection((address, PORT), timeout=0.05) as conn:
                conn.settimeout(2.0)
                conn.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := conn.recv(4096):
                    data += chunk
        except OSError:
            return None
        text = data.decode(errors="replace")
        if not text.startswith("HTTP/1.1 200") or "visits=" not in text:
            return None
        return int(text.split("visits=")[1].split()[0])

    def run(self, address: str) -> None:
        while not self.stop.is_set():
            count = self.visit(address)
            if count is None:
                self.errors += 1
                time.sleep(0.005)
                continue
            with self.lock:
                self.answers.append((time.monotonic(), count))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an answer between `since` and `until`, a gap still open at
        `until` counted up to the first answer after it (answers may resume only later: every
        writer can be held by a request to the frozen server)."""
        times = sorted(t for t, _ in self.answers)
        inside = [t for t in times if since <= t <= until]
        after = next((t for t in times if t > until), None)
        bounded = inside + ([after] if after is not None else [])
        return max((b - a for a, b in itertools.pairwise(bounded)), default=float("nan"))


def cfy(env: dict, *args: str) -> str:
    result = subprocess.run([CFY, *args], env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"cfy {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--migrations", type=int, default=20)
    parser.add_argument("--order", choices=["group", "sequential"], default="group",
                        help="the migrate workflow's order: both containers under one freeze (the default), or one "
                             "after the other")
    args = parser.parse_args()
    lab = json.loads((ROOT / ".lab/lab.json").read_text())
    addresses = [lab["providers"][p]["public_address"] for p in ("provider-a", "provider-b")]
    env = dict(os.environ, CFY_WORKDIR=str(ROOT / ".lab/soak-cfy"), PATH=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}")
    blueprint = f"soak-{uuid.uuid4().hex[:6]}"
    inputs = ROOT / ".lab" / f"{blueprint}.json"
    inputs.write_text(json.dumps({
        **{f"provider_{p[-1]}": {k: lab["providers"][p][k] for k in ("docker_host", "public_address")}
           for p in ("provider-a", "provider-b")},
        "web_public_port": PORT, "redis_public_port": PORT + 300, "dns_name": blueprint, "dns_ttl": 2,
    }))
    cfy(env, "init", str(ROOT / "blueprints/webapp.yaml"), "-b", blueprint, "-i", str(inputs))
    cfy(env, "executions", "start", "install", "-b", blueprint)
    client = Client(addresses)
    client.start()
    rows = []
    failures = []
    try:
        time.sleep(1.0)
        for i in range(args.migrations):
            target = "provider_b" if i % 2 == 0 else "provider_a"
            started = time.monotonic()
            try:
                cfy(env, "executions", "start", "migrate", "-b", blueprint, "-p", f"target_provider={target}",
                    "-p", "dns_wait_ttl=false", "-p", f"order={args.order}")
            except RuntimeError as err:
                failures.append(f"migration {i + 1}: {err}")
                break
            ended = time.monotonic()
            time.sleep(0.5)
            engine = {}
            for node in ("redis", "web"):
                [instance] = json.loads(cfy(env, "node-instances", "-b", blueprint, node))
                props = instance["runtime_properties"]
                engine[node] = (props["provider"], props["last_migration"]["downtime_ms"])
            rows.append((i + 1, target, engine, client.longest_gap(started, ended + 0.5), ended - started))
            print(f"migration {i + 1:>2} ({args.order}) to {target}: redis {engine['redis'][1]} ms, "
                  f"web {engine['web'][1]} ms, client gap {rows[-1][3]:.3f} s, execution {rows[-1][4]:.1f} s",
                  flush=True)
        time.sleep(1.0)
    finally:
        client.stop.set()
        client.join()
        final = next((c for c in (client.visit(a) for a in addresses) if c is not None), None)
        cfy(env, "executions", "start", "uninstall", "-b", blueprint)
        inputs.unlink(missing_ok=True)
    # Each answered write has a count of its own (Redis INCR): a count answered twice means the
    # counter went back, i.e. acknowledged writes were lost, as does a final count below the
    # highest answered. (Answers of the four writers arrive out of order: order is not a test.)
    counts = sorted(c for _, c in client.answers)
    repeated = [a for a, b in itertools.pairwise(counts) if b == a]
    if repeated:
        failures.append(f"{len(repeated)} counts answered twice (lost writes): {repeated[:5]}")
    if final is None or (counts and final <= counts[-1]):
        failures.append(f"final count {final} not above the highest answered {counts[-1] if counts else None}")
    span = f"{counts[0]} to {counts[-1]}" if counts else "- to -"
    print(f"\n{len(counts)} writes answered (visit count {span}), final count {final}; {len(rows)} migrations")
    print("\n| # | to | Redis downtime (engine) | web downtime (engine) | longest gap seen by the client |")
    print("|---|---|---|---|---|")
    for n, target, engine, gap, _ in rows:
        print(f"| {n} | {target} | {engine['redis'][1]} ms | {engine['web'][1]} ms | {gap:.3f} s |")
    for failure in failures:
        print(f"SOAK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
