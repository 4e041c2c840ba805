"""Migration downtime benchmark on the lab: the same workload (the web image holding N MiB of
touched, incompressible memory) moved from provider-a to provider-b by several methods, in one
run, with downtime measured from outside.

Downtime is what a client sees: a prober sends GET /healthz every 5 ms to the service's public
address on both providers and records the longest gap between two answers while the migration
runs. Not a pass/fail test: it prints figures and ratios against the manual Docker path measured
in the same run.

Methods so far:
- vimigrate: `vimigrate.migrate` (preflight with CRIU proof, verification on) through the engine;
- docker: the manual Docker path: `docker checkpoint create` on A, the checkpoint directory copied
  into B's container directory, `docker start --checkpoint` on B.

Usage: .venv/bin/python scripts/bench/migration_bench.py [--sizes 10,100,500] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import vimigrate

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"
PORT = 18800


def docker(lab: dict, provider: str, *args: str, check: bool = True) -> str:
    env = dict(os.environ, DOCKER_API_VERSION="1.41")
    result = subprocess.run([DOCKER, "-H", lab["providers"][provider]["docker_host"], *args], env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {provider}: {result.stderr.strip()}")
    return result.stdout.strip()


class Prober:
    """GET /healthz every `interval` seconds on every address; the longest gap without an answer."""

    def __init__(self, urls: list[str], interval: float = 0.005):
        self.urls = urls
        self.interval = interval
        self.last_ok: float | None = None
        self.longest = 0.0
        self.stop = threading.Event()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.thread = threading.Thread(target=self.run, daemon=True)

    def answered(self) -> bool:
        for url in self.urls:
            try:
                with self.opener.open(url, timeout=0.2) as response:
                    if response.status == 200:
                        return True
            except OSError:
                continue
        return False

    def run(self) -> None:
        while not self.stop.is_set():
            if self.answered():
                now = time.monotonic()
                if self.last_ok is not None:
                    self.longest = max(self.longest, now - self.last_ok)
                self.last_ok = now
            time.sleep(self.interval)

    def __enter__(self) -> "Prober":
        deadline = time.monotonic() + 30
        while not self.answered():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workload never answered at {self.urls}")
            time.sleep(0.1)
        self.last_ok = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        # Wait for the service to answer again before stopping, so the gap is closed.
        deadline = time.monotonic() + 60
        while not self.answered() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        self.stop.set()
        self.thread.join()


def start_workload(lab: dict, name: str, mib: int) -> None:
    docker(lab, "provider-a", "run", "-d", "--name", name, "--label", "io.vimigrate.managed=true",
           "-p", f"{PORT}:8080", "-e", f"MEM_MIB={mib}", "-e", "REDIS_ADDR=127.0.0.1:1", lab["images"]["web"])
    deadline = time.monotonic() + 60
    while "holding" not in docker(lab, "provider-a", "logs", name) and time.monotonic() < deadline:
        time.sleep(0.2)


def by_vimigrate(lab: dict, name: str) -> dict:
    providers = [vimigrate.Provider.connect({"name": p, "docker_host": lab["providers"][p]["docker_host"]})
                 for p in ("provider-a", "provider-b")]
    started = time.monotonic()
    report = vimigrate.migrate(providers[0], providers[1], {"container": name})
    # The engine runs inside this process: its peak RSS bounds the broker's memory.
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"total_s": time.monotonic() - started, "bytes": report["stats"]["transfer_bytes"],
            "broker_downtime_s": report["stats"]["downtime_ms"] / 1000, "broker_peak_rss_mib": peak_mib}


def by_docker(lab: dict, name: str) -> dict:
    """The manual path: checkpoint, copy the directory, place it, start from it."""
    started = time.monotonic()
    ckdir = Path(f"/var/lib/vimigrate-lab/bench-{uuid.uuid4().hex[:8]}")
    ckdir.mkdir(parents=True)
    try:
        config = json.loads(docker(lab, "provider-a", "inspect", name))[0]
        docker(lab, "provider-b", "create", "--name", name, "--hostname", config["Config"]["Hostname"],
               "--label", "io.vimigrate.managed=true", "-p", f"{PORT}:8080",
               *[arg for env in config["Config"]["Env"] for arg in ("-e", env)], config["Config"]["Image"])
        docker(lab, "provider-a", "checkpoint", "create", "--checkpoint-dir", str(ckdir), name, "bench")
        b_root = docker(lab, "provider-b", "info", "-f", "{{.DockerRootDir}}")
        b_id = docker(lab, "provider-b", "inspect", "-f", "{{.Id}}", name)
        target = Path(b_root) / "containers" / b_id / "checkpoints"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ckdir / "bench", target / "bench")
        size = sum(f.stat().st_size for f in (ckdir / "bench").rglob("*") if f.is_file())
        docker(lab, "provider-b", "start", "--checkpoint", "bench", name)
        docker(lab, "provider-a", "rm", "-f", name)
        return {"total_s": time.monotonic() - started, "bytes": size, "broker_downtime_s": None}
    finally:
        shutil.rmtree(ckdir, ignore_errors=True)


METHODS = {"vimigrate": by_vimigrate, "docker": by_docker}


def measure(lab: dict, method: str, mib: int) -> dict:
    name = f"bench-{method}-{mib}-{uuid.uuid4().hex[:6]}"
    urls = [f"http://{lab['providers'][p]['public_address']}:{PORT}/healthz" for p in ("provider-a", "provider-b")]
    try:
        start_workload(lab, name, mib)
        with Prober(urls) as prober:
            result = METHODS[method](lab, name)
        result["downtime_s"] = prober.longest
        return result
    finally:
        for provider in ("provider-a", "provider-b"):
            docker(lab, provider, "rm", "-f", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="MiB of touched memory, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    lab = json.loads((ROOT / ".lab/lab.json").read_text())
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    results: dict = {}
    for mib in sizes:
        for method in methods:
            for run in range(args.runs):
                figures = measure(lab, method, mib)
                results.setdefault((method, mib), []).append(figures)
                print(f"{method:<10} {mib:>4} MiB run {run + 1}: downtime {figures['downtime_s']:.3f} s, "
                      f"total {figures['total_s']:.2f} s, {figures['bytes'] / 1e6:.1f} MB", file=sys.stderr)
    print("\n| method | memory | downtime (median, min-max) | vs docker | total | bytes moved | broker peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for mib in sizes:
        base = statistics.median(r["downtime_s"] for r in results.get(("docker", mib), [{"downtime_s": float("nan")}]))
        for method in methods:
            runs = results[(method, mib)]
            down = [r["downtime_s"] for r in runs]
            median = statistics.median(down)
            print(f"| {method} | {mib} MiB | {median:.2f} s ({min(down):.2f}-{max(down):.2f}) | "
                  f"{(f'{median / base:.2f}x' if base == base else '-')} | "
                  f"{statistics.median(r['total_s'] for r in runs):.2f} s | "
                  f"{statistics.median(r['bytes'] for r in runs) / 1e6:.1f} MB | "
                  f"{max((r.get('broker_peak_rss_mib') or 0) for r in runs):.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps({f"{m}/{s}": v for (m, s), v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
