"""Group migration benchmark: a whole VI under one freeze against one container after another.

Two VIs on the lab, each moved from provider-a to provider-b by the engine (direct path):
- `example`: the web server and its Redis (the example blueprint's VI);
- `three-tier`: the web server, Redis, and a worker holding one connection to Redis (labapp's
  WORKER_KEY: INCR every 10 ms on its own named connection).

Each VI moves `group` (one `migrate_group` call: one freeze) and `sequential` (one `migrate` per
container, dependencies first, each told the address changes of those moved before it, as the
`migrate` workflow does), with kept addresses (`preserve`: the destination has the subnet free)
and with a remapped subnet (`remap`: provider-b holds the subnet already). Runs interleave the
modes, so that drift of the machine hits both alike.

The end-to-end client: every 10 ms a GET / on the web server's published port, at both
providers' public addresses in turn (on a new connection each time, as a client would); each
answer is a write and a read of Redis (the visit count). `gap_s` is the longest time between
two answers during the move. A write is lost when an answered count repeats or the final count
is not above the highest answered (the soak's check). `connections_kept` is whether the
worker's connection kept its Redis client id (three-tier) and the web server kept its one Redis
connection (both VIs). `longest_member_s` is the slowest member's downtime moved alone, taken
from the sequential run of the same VI and address mode (each member moves alone there), and
`longest_member_total_s` its total.

Usage: .venv/bin/python scripts/bench/group_bench.py [--runs 3] [--out scripts/bench/results]
(make bench-group; part of make bench)
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import socket
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from migration_bench import ROOT, Lab, machine_description, stack_versions

import vimigrate

WEB_PORT = 18700
REDIS_PORT = 18701
SUBNET = "172.25.77.0/24"
VIS = {"example": ("redis", "web"), "three-tier": ("redis", "web", "worker")}


class Client:
    """GET / at each address every `interval` s, from two threads per address offset by half an
    interval (a request caught by the freeze waits for its answer or its timeout without holding
    the others up); the answers with their times and counts."""

    def __init__(self, addresses: list[str], interval: float = 0.02, per_address: int = 2):
        self.addresses, self.interval = addresses, interval
        self.answers: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(a, i * interval / per_address), daemon=True)
                        for a in addresses for i in range(per_address)]

    def visit(self, address: str) -> int | None:
        try:
            with socket.create_connection((address, WEB_PORT), timeout=0.1) as conn:
                conn.settimeout(3.0)
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

    def run(self, address: str, offset: float) -> None:
        time.sleep(offset)
        while not self.stop.is_set():
            count = self.visit(address)
            if count is not None:
                with self.lock:
                    self.answers.append((time.monotonic(), count))
            time.sleep(self.interval)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def gap(self, since: float, until: float) -> float:
        times = sorted(t for t, _ in self.answers if since - 1.0 <= t <= until + 5.0)
        return max((b - a for a, b in itertools.pairwise(times)), default=float("nan"))

    def lost_writes(self, final: int | None) -> int:
        counts = sorted(c for _, c in self.answers)
        repeated = sum(1 for a, b in itertools.pairwise(counts) if a == b)
        behind = 1 if final is None or (counts and final <= counts[-1]) else 0
        return repeated + behind


def redis_command(lab: Lab, provider: str, *args: str) -> str:
    return lab.docker(provider, "exec", CURRENT["redis"], "redis-cli", *args)


CURRENT: dict[str, str] = {}


def worker_id(lab: Lab, provider: str) -> str | None:
    for line in redis_command(lab, provider, "CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == "worker":
            return fields["id"]
    return None


def web_connects(lab: Lab, provider: str) -> int:
    """How often the web server connected to Redis, as its container's log on `provider` says."""
    out = lab.docker(provider, "logs", CURRENT["web"])
    return sum(1 for line in out.splitlines() if line.startswith("connected to redis"))


def start_vi(lab: Lab, vi: str, remap: bool) -> None:
    tag = uuid.uuid4().hex[:6]
    CURRENT.clear()
    CURRENT.update({n: f"vmbench-{n}-{tag}" for n in VIS[vi]}, net=f"vmbench-net-{tag}", block=f"vmbench-block-{tag}")
    run = ["run", "-d", "--runtime", "vimigrate", "--network", CURRENT["net"], "--label", "io.vimigrate.managed=true"]
    lab.docker("provider-a", "network", "create", "--subnet", SUBNET, "--label", "io.vimigrate.managed=true",
               CURRENT["net"])
    lab.docker("provider-a", *run, "--name", CURRENT["redis"], "--network-alias", "redis", "-p",
               f"{REDIS_PORT}:6379", "vimigrate-lab/redis:latest")
    lab.docker("provider-a", *run, "--name", CURRENT["web"], "-p", f"{WEB_PORT}:8080", "-e", "REDIS_ADDR=redis:6379",
               "vimigrate-lab/web:latest")
    if "worker" in CURRENT:
        lab.docker("provider-a", *run, "--name", CURRENT["worker"], "-e", "REDIS_ADDR=redis:6379", "-e",
                   "WORKER_KEY=worker:count", "vimigrate-lab/web:latest")
    if remap:
        lab.docker("provider-b", "network", "create", "--subnet", SUBNET, CURRENT["block"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = Client([lab.address("provider-a")]).visit(lab.address("provider-a")) is not None
        if ready and ("worker" not in CURRENT or worker_id(lab, "provider-a")):
            return
        time.sleep(0.2)
    raise RuntimeError("the VI never answered on provider-a")


def remove_vi(lab: Lab) -> None:
    names = [CURRENT[n] for n in ("redis", "web", "worker") if n in CURRENT]
    for p in ("provider-a", "provider-b"):
        lab.docker(p, "rm", "-f", *names, check=False)
        lab.docker(p, "network", "rm", CURRENT["net"], CURRENT["block"], check=False)


def one_run(lab: Lab, vi: str, mode: str, address_mode: str) -> dict:
    start_vi(lab, vi, address_mode == "remap")
    a = vimigrate.Provider.connect({"name": "provider-a", "docker_host": lab.host("provider-a"),
                                    "public_address": lab.address("provider-a")})
    b = vimigrate.Provider.connect({"name": "provider-b", "docker_host": lab.host("provider-b"),
                                    "public_address": lab.address("provider-b")})
    client = Client([lab.address("provider-a"), lab.address("provider-b")])
    try:
        worker_before = worker_id(lab, "provider-a") if "worker" in CURRENT else None
        client.start()
        time.sleep(1.0)
        started = time.monotonic()
        members = [CURRENT[n] for n in VIS[vi]]
        if mode == "group":
            report = vimigrate.migrate_group(b, [(a, {"container": m}) for m in members])
            reports = report["members"]
            engine_downtime_ms = report["stats"]["downtime_ms"]
            spread_ms = report["stats"]["freeze_spread_ms"]
            group_stats = report["stats"]
        else:
            reports, changed = [], {}
            for m in members:
                moved = vimigrate.migrate(a, b, {"container": m, "address_map": dict(changed)})
                changed.update(moved["address_changes"])
                reports.append(moved)
            engine_downtime_ms = sum(r["stats"]["downtime_ms"] for r in reports)
            spread_ms = None
            group_stats = None
        ended = time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not [t for t, _ in client.answers if t > ended]:
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        client.join()
    final = client.visit(lab.address("provider-b"))
    # The destination container's log starts at its restore: any connect there is a reconnect.
    kept = web_connects(lab, "provider-b") == 0
    if "worker" in CURRENT:
        kept = kept and worker_id(lab, "provider-b") == worker_before
    figures = {
        "gap_s": client.gap(started, ended), "total_s": ended - started,
        "engine_downtime_s": engine_downtime_ms / 1000,
        "member_downtime_s": {r["container"].split("-")[1]: r["stats"]["downtime_ms"] / 1000 for r in reports},
        "member_total_s": {r["container"].split("-")[1]: r["stats"]["total_ms"] / 1000 for r in reports},
        "freeze_spread_ms": spread_ms, "group_stats": group_stats, "connections_kept": kept,
        "lost_writes": client.lost_writes(final), "answers": len(client.answers),
        "criu_tcp": sorted({r["criu_tcp_option"] or "host" for r in reports}),
        "sockets_kept": sum(r["stats"]["sockets_kept"] for r in reports),
    }
    remove_vi(lab)
    return figures


def summarize(results: dict) -> list[dict]:
    rows = []
    for (vi, address_mode), by_mode in results.items():
        alone = by_mode["sequential"]
        longest = statistics.median(max(r["member_downtime_s"].values()) for r in alone)
        longest_total = statistics.median(max(r["member_total_s"].values()) for r in alone)
        for mode, runs in by_mode.items():
            rows.append({
                "vi": vi, "mode": mode, "address_mode": address_mode,
                "gap_s": round(statistics.median(r["gap_s"] for r in runs), 3),
                "gap_min_s": round(min(r["gap_s"] for r in runs), 3),
                "gap_max_s": round(max(r["gap_s"] for r in runs), 3),
                "longest_member_s": round(longest, 3),
                "longest_member_total_s": round(longest_total, 3),
                "total_s": round(statistics.median(r["total_s"] for r in runs), 3),
                "engine_downtime_s": round(statistics.median(r["engine_downtime_s"] for r in runs), 3),
                "connections_kept": all(r["connections_kept"] for r in runs),
                "lost_writes": sum(r["lost_writes"] for r in runs),
                "runs": len(runs),
            })
    return rows


def targets(rows: list[dict]) -> list[dict]:
    checks = []
    for row in (r for r in rows if r["mode"] == "group"):
        where = f"{row['vi']}, {row['address_mode']}"
        gap_bound = row["longest_member_s"] + 0.2
        total_bound = 1.3 * row["longest_member_total_s"]
        checks += [
            {"target": f"{where}: group gap <= slowest member alone + 0.2 s",
             "measured": f"{row['gap_s']:.3f} s <= {gap_bound:.3f} s", "met": row["gap_s"] <= gap_bound},
            {"target": f"{where}: total <= 1.3x the slowest member's total alone",
             "measured": f"{row['total_s']:.2f} s <= {total_bound:.2f} s "
                         f"({row['total_s'] / row['longest_member_total_s']:.2f}x)",
             "met": row["total_s"] <= total_bound},
            {"target": f"{where}: connections kept", "measured": str(row["connections_kept"]),
             "met": row["connections_kept"]},
            {"target": f"{where}: no write lost", "measured": f"{row['lost_writes']} lost",
             "met": row["lost_writes"] == 0},
        ]
    return checks


def markdown(rows: list[dict], checks: list[dict]) -> str:
    header = ("| vi | address_mode | mode | gap_s (median, min-max) | longest_member_s | total_s | "
              "longest member total | connections_kept | lost writes |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['vi']} | {r['address_mode']} | {r['mode']} | {r['gap_s']:.3f} ({r['gap_min_s']:.3f}-"
                     f"{r['gap_max_s']:.3f}) | {r['longest_member_s']:.3f} | {r['total_s']:.2f} | "
                     f"{r['longest_member_total_s']:.2f} | {r['connections_kept']} | {r['lost_writes']} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else 'NO'} |" for c in checks]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((r["vi"], r["address_mode"]) for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    width = 0.38
    for offset, mode, color in ((-width / 2, "group", "tab:blue"), (width / 2, "sequential", "tab:gray")):
        mine = [next(r for r in rows if (r["vi"], r["address_mode"]) == c and r["mode"] == mode) for c in cells]
        ys = [r["gap_s"] for r in mine]
        errs = [[y - r["gap_min_s"] for y, r in zip(ys, mine, strict=True)],
                [r["gap_max_s"] - y for y, r in zip(ys, mine, strict=True)]]
        ax.bar([i + offset for i in range(len(cells))], ys, width, yerr=errs, capsize=3, color=color, label=mode)
    for i, c in enumerate(cells):
        longest = next(r["longest_member_s"] for r in rows if (r["vi"], r["address_mode"]) == c)
        ax.plot([i - width, i + width], [longest + 0.2] * 2, color="tab:red", linestyle="--",
                label="slowest member alone + 0.2 s" if i == 0 else None)
    ax.set_xticks(range(len(cells)), [f"{vi}\n{mode}" for vi, mode in cells])
    ax.set_ylabel("longest gap seen by the client (s)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", choices=list(VIS), help="one VI only (a quick look)")
    parser.add_argument("--out", type=Path, help="directory for <date>-group.table.md, .json and .png")
    args = parser.parse_args()
    lab = Lab(json.loads((ROOT / ".lab/lab.json").read_text()))
    results: dict = {}
    for vi in [v for v in VIS if not args.only or v == args.only]:
        for address_mode in ("preserve", "remap"):
            for run_no in range(args.runs):
                for mode in ("group", "sequential"):
                    figures = one_run(lab, vi, mode, address_mode)
                    results.setdefault((vi, address_mode), {}).setdefault(mode, []).append(figures)
                    print(f"{vi:<10} {address_mode:<8} {mode:<10} run {run_no + 1}: gap {figures['gap_s']:.3f} s, "
                          f"total {figures['total_s']:.2f} s, members {figures['member_downtime_s']}, kept "
                          f"{figures['connections_kept']}, lost {figures['lost_writes']}, tcp {figures['criu_tcp']}, "
                          f"sockets kept {figures['sockets_kept']}, group {figures['group_stats']}", file=sys.stderr,
                          flush=True)
    rows = summarize(results)
    checks = targets(rows)
    table = markdown(rows, checks)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        day = datetime.date.today().isoformat()
        machine = machine_description()
        versions = stack_versions(lab)
        command = f"make bench-group (scripts/bench/group_bench.py --runs {args.runs})"
        stem = args.out / f"{day}-group"
        stem.with_suffix(".json").write_text(json.dumps(
            {"date": day, "machine": machine, "versions": versions, "command": command, "rows": rows,
             "targets": checks, "runs": {f"{vi}/{am}": v for (vi, am), v in results.items()}}, indent=2))
        plot(rows, stem.with_suffix(".png"), f"group vs one after another, {day}, {machine}")
        stem.with_suffix(".table.md").write_text(f"Measured {day} on {machine}; {versions}.\n"
                                                 f"Command: `{command}`.\n\n{table}\n")
        print(f"wrote {stem}.json, .table.md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
