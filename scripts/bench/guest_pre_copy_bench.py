"""Pre-copy measured where a kernel tracks dirty memory: the lab's emulated guest (Debian 13's
kernel with soft-dirty bits; the host's kernel has none). Under software emulation only ratios
within the guest mean anything, so every figure here comes from moves off the same guest in the
same run, methods interleaved: `pre-copy` against `stop-and-copy` of the same workload, guest to
provider-a.

The workload: a counter next to the lab's web application holding N MiB of JSON-like text of
which it rewrites 10 % every second (the dirtying workload of memory_bench.py). Downtime is the
broker's (freeze to running again on the destination): the guest is reached only through its
TLS Docker API, so no outside prober runs there; on the host, memory_bench.py shows the broker's
figure within 0.2 s of the outside one. Two variants: the guest kernel's default transparent
huge pages (`always`, as Debian's: soft-dirty bits then cover 2 MiB pages, so scattered 64 KiB
writes dirty whole huge pages) and the workload without them (labapp's `THP=never`).

The issue's target: pre-copy downtime at most 1.5x the last round's wire time plus the fixed
cost, where
- the last round's wire time = the bytes the freeze carried (the report's last `round_bytes`)
  over the rate the pre-dump rounds moved memory at (their bytes over their time, CRIU's
  pre-dumps included, so the bound is if anything generous);
- the fixed cost = stop-and-copy's downtime less its own wire time at that rate (what a freeze
  costs apart from moving memory).

Usage: .venv/bin/python scripts/bench/guest_pre_copy_bench.py [--mib 48] [--runs 3] [--out DIR]
(the guest must be up: `bash scripts/lab/guest.sh up`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from framework import lab as lab_view  # noqa: E402
from framework.engine import connect, docker, docker_at  # noqa: E402
from framework.workloads import run_busy_counter  # noqa: E402

import vimigrate  # noqa: E402

#: As in tests/guest: the guest's CPU lacks the host's AVX-512 (the check overridden, the
#: workload told not to pick those extensions), and the CRIU proof is skipped (20 s a move there).
NO_AVX512 = "GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
FAST = {"ignore_host_checks": ["cpu"], "check_criu": False}


def gdocker(guest: lab_view.GuestFacts, *args: str, check: bool = True) -> str:
    tls = guest.tls
    return docker_at(guest.docker_host, "--tlsverify", "--tlscacert", tls.ca, "--tlscert", tls.cert,
                     "--tlskey", tls.key, *args, check=check)


def one_move(lab: lab_view.Lab, guest: lab_view.GuestFacts, mib: int, memory: str, thp: bool) -> dict:
    """The workload started on provider-a, moved onto the guest (stop-and-copy), left to run,
    then moved off the guest with `memory`: that move's report. Without `thp` the workload runs
    without transparent huge pages (labapp's THP=never)."""
    name = f"bench-guest-{uuid.uuid4().hex[:6]}"
    a, g = connect(lab, "provider-a", timeout=300), vimigrate.Provider.connect(guest.config())
    try:
        env = ("-e", NO_AVX512) if thp else ("-e", NO_AVX512, "-e", "THP=never")
        run_busy_counter(lab, name, mib=mib, kind="text", dirty_percent=10, docker_args=env)
        vimigrate.migrate(a, g, {"container": name, **FAST})
        time.sleep(3)
        report = vimigrate.migrate(g, a, {"container": name, **FAST, "memory": memory})
        return {"memory": report["memory"], **report["stats"]}
    finally:
        docker(lab, "provider-a", "rm", "-f", name, check=False)
        gdocker(guest, "rm", "-f", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lab, guest = lab_view.running(), lab_view.guest()
    rows: list[dict] = []
    targets: list[dict] = []
    lines = ["| huge pages | mode | downtime, median (min-max) | total | on the wire | rounds (bytes, per run) |",
             "|---|---|---|---|---|---|"]
    every: dict[str, list[dict]] = {}
    # The guest's kernel default (THP always, as Debian's) and the workload without them.
    for thp in (True, False):
        variant = "dirtying-text" if thp else "dirtying-text-no-thp"
        runs: dict[str, list[dict]] = {"pre-copy": [], "stop-and-copy": []}
        for run_no in range(args.runs):
            for memory in runs:
                stats = one_move(lab, guest, args.mib, memory, thp)
                runs[memory].append(stats)
                print(f"guest -> provider-a {variant:<21} {memory:<14} run {run_no + 1}: downtime "
                      f"{stats['downtime_ms']} ms, rounds {stats.get('round_bytes')}, predump "
                      f"{stats.get('predump_ms')} ms, checkpoint {stats['checkpoint_bytes'] / 1e6:.1f} MB",
                      file=sys.stderr, flush=True)
        every.update({f"{variant}/{m}": v for m, v in runs.items()})
        pre, sac = runs["pre-copy"], runs["stop-and-copy"]
        # The rate the rounds moved memory at (their bytes over their time, CRIU's pre-dumps in).
        rate = statistics.median(r["predump_bytes"] / (r["predump_ms"] / 1000) for r in pre if r.get("predump_ms"))
        last_round_s = statistics.median(r["round_bytes"][-1] for r in pre) / rate
        sac_down = statistics.median(r["downtime_ms"] for r in sac) / 1000
        sac_wire_s = statistics.median(r["checkpoint_bytes"] for r in sac) / rate
        fixed_s = max(0.0, sac_down - sac_wire_s)
        pre_down = statistics.median(r["downtime_ms"] for r in pre) / 1000
        bound = 1.5 * last_round_s + fixed_s
        for m, rs in runs.items():
            row = {"method": "vimigrate", "mode": m, "link_mbit": None, "workload": variant, "mib": args.mib,
                   "where": "guest -> provider-a (emulated guest)",
                   "downtime_s": statistics.median(r["downtime_ms"] for r in rs) / 1000,
                   "downtime_min_s": min(r["downtime_ms"] for r in rs) / 1000,
                   "downtime_max_s": max(r["downtime_ms"] for r in rs) / 1000,
                   "total_s": statistics.median(r["total_ms"] for r in rs) / 1000,
                   "wire_bytes": int(statistics.median(r.get("wire_bytes") or r["transfer_bytes"] for r in rs)),
                   "rounds": [r.get("round_bytes") for r in rs]}
            rows.append(row)
            lines.append(f"| {'kernel default' if thp else 'off (THP=never)'} | {m} | {row['downtime_s']:.2f} s "
                         f"({row['downtime_min_s']:.2f}-{row['downtime_max_s']:.2f}) | {row['total_s']:.1f} s | "
                         f"{row['wire_bytes'] / 1e6:.1f} MB | {row['rounds']} |")
        targets.append({"target": "pre-copy downtime <= 1.5 x last round's wire time + fixed cost",
                        "workload": variant, "value": round(pre_down, 3), "bound": round(bound, 3),
                        "met": pre_down <= bound, "rate_mb_s": round(rate / 1e6, 2),
                        "last_round_wire_s": round(last_round_s, 3), "fixed_s": round(fixed_s, 3),
                        "vs_stop_and_copy": round(pre_down / sac_down, 3)})
    lines.append("")
    for t in targets:
        lines.append(f"Target ({t['workload']}): pre-copy {t['value']} s against 1.5 x {t['last_round_wire_s']} s + "
                     f"{t['fixed_s']} s = {t['bound']} s: {'met' if t['met'] else '**not met**'} (rounds moved "
                     f"{t['rate_mb_s']} MB/s; pre-copy / stop-and-copy {t['vs_stop_and_copy']}).")
    table = "\n".join(lines)
    print(table)
    if args.out:
        day = datetime.date.today().isoformat()
        stem = args.out / f"{day}-memory-guest"
        command = f"scripts/bench/guest_pre_copy_bench.py --mib {args.mib} --runs {args.runs}"
        stem.with_suffix(".json").write_text(json.dumps(
            {"date": day, "machine": f"the lab's qemu guest (TCG), kernel {guest.kernel}", "command": command,
             "rows": rows, "targets": targets, "runs": every}, indent=2))
        stem.with_suffix(".table.md").write_text(f"Measured {day} in the lab's emulated guest (kernel {guest.kernel});"
                                                 f" command: `{command}`.\n\n{table}\n")
        print(f"wrote {stem}.json and .table.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
