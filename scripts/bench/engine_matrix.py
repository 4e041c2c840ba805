#!/usr/bin/env python3
"""The compatibility matrix, measured: for each pair of lab providers (Docker 20.10, 26.1, 28.5 and
the qemu guest on its own kernel) and each path the engines allow, one container moved there and
back, as a counter and as 100 MiB of touched memory; the engine's downtime (freeze to restored)
of each move, or the preflight's refusal. Not a test and not a benchmark of speed (one run per
cell on a noisy 2-core machine; the guest is emulated): it shows what works where.

    .venv/bin/python scripts/bench/engine_matrix.py [--no-guest] --out scripts/bench/results

Needs the lab (make lab-up) and, unless --no-guest, the guest (bash scripts/lab/guest.sh up).
Writes <out>/<date>-engines.json and .md."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from framework import lab as lab_view  # noqa: E402
from framework.engine import MANAGED, docker_at  # noqa: E402

import vimigrate  # noqa: E402

#: The guest's CPU lacks the host's AVX-512 (and has sse4a the host lacks): processes moved
#: there must not use them, and the check is overridden (see tests/guest).
NO_AVX512 = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
COUNT = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.2; done"


def providers(with_guest: bool) -> dict[str, dict]:
    lab = lab_view.running()
    found = {}
    for name in ("provider-a", "provider-b", "provider-26", "provider-28", "provider-28c"):
        facts = lab.provider(name)
        found[name] = {"config": facts.config(timeout_secs=180), "host": facts.docker_host, "tls": [],
                       "stack": facts.require_versions().__dict__}
    if with_guest:
        g = lab_view.guest()
        tls = ["--tlsverify", "--tlscacert", g.tls.ca, "--tlscert", g.tls.cert, "--tlskey", g.tls.key]
        found["provider-guest"] = {"config": g.config(), "host": g.docker_host, "tls": tls,
                                   "stack": {"engine": g.engine, "containerd": g.containerd, "runc": g.runc,
                                             "criu": g.criu, "kernel": g.kernel, "cgroup_version": g.cgroup_version}}
    return found


def run_workload(p: dict, name: str, workload: str, runtime: str, images) -> None:
    if workload == "counter":
        args = [images.counter, "sh", "-c", COUNT]
    else:
        script = f"MEM_MIB=100 REDIS_ADDR=127.0.0.1:1 /usr/local/bin/vimigrate-labapp >/dev/null 2>&1 & {COUNT}"
        args = ["--entrypoint", "/bin/sh", images.web, "-c", script]
    docker_at(p["host"], *p["tls"], "run", "-d", "--name", name, "--runtime", runtime, "--label", MANAGED,
              "-e", NO_AVX512, *args)
    time.sleep(4 if workload == "counter" else 8)


def move(src: dict, dst: dict, name: str, method: str, guest: bool) -> dict:
    options = {"container": name, "method": method}
    if guest:
        options["ignore_host_checks"] = ["cpu"]
    try:
        here, there = vimigrate.Provider.connect(src["config"]), vimigrate.Provider.connect(dst["config"])
        stats = vimigrate.migrate(here, there, options)["stats"]
        return {"ok": True, "downtime_s": stats["downtime_ms"] / 1000, "total_s": stats["total_ms"] / 1000}
    except vimigrate.MigrationFailedError as err:
        return {"ok": False, "phase": err.phase, "error": str(err)[:300]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-guest", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "scripts/bench/results")
    args = parser.parse_args()
    found = providers(not args.no_guest)
    images = lab_view.running().images
    pairs = [("provider-a", "provider-b"), ("provider-a", "provider-26"), ("provider-a", "provider-28"),
             ("provider-26", "provider-28"), ("provider-a", "provider-28c")]
    if not args.no_guest:
        pairs.append(("provider-a", "provider-guest"))
    rows = []
    for one, other in pairs:
        guest = "provider-guest" in (one, other)
        for method in ("direct", "docker"):
            for workload in ("counter", "100mib"):
                name = f"vmmatrix-{uuid.uuid4().hex[:6]}"
                run_workload(found[one], name, workload, "vimigrate" if method == "direct" else "runc", images)
                there = move(found[one], found[other], name, method, guest)
                back = move(found[other], found[one], name, method, guest) if there["ok"] else None
                for p in (one, other):
                    docker_at(found[p]["host"], *found[p]["tls"], "rm", "-f", name, check=False)
                row = {"pair": f"{one} <-> {other}", "path": method, "workload": workload, "there": there,
                       "back": back}
                print(json.dumps(row), flush=True)
                rows.append(row)
                if not there["ok"] and workload == "counter":
                    break  # the preflight refuses the path: the 100 MiB row would say the same
    date = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node()} ({subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores)"
    (args.out / f"{date}-engines.json").write_text(json.dumps(
        {"date": date, "machine": machine, "stacks": {k: v["stack"] for k, v in found.items()}, "rows": rows},
        indent=2) + "\n")
    lines = [f"# Compatibility matrix, {date} ({machine})", "",
             ("Downtime (freeze to restored, the engine's measure) of one move there and one back; one run per "
              "cell. The guest is emulated (qemu TCG): its figures show function, not speed."), "",
             "| pair | path | workload | there | back |", "|---|---|---|---|---|"]

    def cell(r: dict | None) -> str:
        if r is None:
            return "-"
        if r["ok"]:
            return f"{r['downtime_s']:.2f} s"
        verb = "refused in preflight" if r["phase"] == "preflight" else f"fails in {r['phase']}, rolled back"
        return f"{verb}: {r['error'].split(': ', 1)[-1][:160]}"
    for r in rows:
        lines.append(f"| {r['pair']} | {r['path']} | {r['workload']} | {cell(r['there'])} | {cell(r['back'])} |")
    (args.out / f"{date}-engines.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
