"""Migration downtime benchmark on the lab: the same workload (the lab's web application holding
N MiB of touched, incompressible memory) moved from provider-a to provider-b by each method, in
one run, with downtime measured from outside.

Downtime is what a client sees: one prober thread per provider sends GET /healthz to the
service's public address there every 5 ms (a new connection each time, as a client would); the
downtime is the longest gap between two answers, from any provider, while the migration runs.
Not a pass/fail test: it prints figures and ratios against the baselines measured in the same
run.

Methods:
- vimigrate: `vimigrate migrate` (the CLI, as a user runs it: preflight with the CRIU proof,
  the direct path through vimigrate-runtime), the container under the `vimigrate` runtime;
- docker: the manual Docker path: `docker checkpoint create --checkpoint-dir` on A, the
  directory copied (host-locally) into the destination container's checkpoint directory,
  `docker start --checkpoint` on B;
- podman: Podman 4.3 (`--runtime runc`), `podman container checkpoint --export` on A, the
  archive copied host-locally, `podman container restore --import` on B (one Podman per
  provider network namespace, each with its own storage);
- criu: CRIU alone, the floor: the same binary as a plain process in its own pid namespace in
  provider-a's network namespace, `criu dump` into a directory, the directory streamed over TCP
  (tar | nc, provider-a's namespace to provider-b's address), `criu restore` in provider-b's
  namespace.

Usage: .venv/bin/python scripts/bench/migration_bench.py [--sizes 10,100,500] [--runs 3]
       [--methods vimigrate,docker,podman,criu] [--out scripts/bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"
PORT = 18800
WORK = Path("/var/lib/vimigrate-lab/bench")
LABAPP = ROOT / "target/release/vimigrate-labapp"
APP_ENV = {"REDIS_ADDR": "127.0.0.1:1", "WEB_CONFIG": "/nonexistent"}


def sh(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=kwargs.pop("timeout", 600), **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Lab:
    def __init__(self, facts: dict):
        self.facts = facts
        self.env = dict(os.environ, DOCKER_API_VERSION="1.41")

    def host(self, p: str) -> str:
        return self.facts["providers"][p]["docker_host"]

    def address(self, p: str) -> str:
        return self.facts["providers"][p]["public_address"]

    def netns(self, p: str) -> str:
        return self.facts["providers"][p]["netns"]

    def docker(self, p: str, *args: str, check: bool = True) -> str:
        return sh([DOCKER, "-H", self.host(p), *args], check=check, env=self.env).stdout.strip()

    def in_netns(self, p: str, *cmd: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns(p)}", *cmd]

    def podman(self, p: str, *args: str, check: bool = True) -> str:
        cmd = self.in_netns(p, "podman", "--root", f"/var/lib/vimigrate-lab/podman-{p}/root",
                            "--runroot", f"/run/vimigrate-lab/podman-{p}/runroot", "--runtime", "runc",
                            "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args)
        return sh(cmd, check=check).stdout.strip()

    def urls(self) -> list[str]:
        return [f"http://{self.address(p)}:{PORT}/healthz" for p in ("provider-a", "provider-b")]


class Prober:
    """Threads per URL send GET every `interval` s, each on a new connection as a client would;
    the longest gap between two answers (from any URL) while it runs.

    A connection attempt that gets no answer is given up after `connect_timeout` (a SYN dropped
    while CRIU restores sockets would otherwise hide the service for a whole TCP retransmission
    timeout); a request on an established connection waits up to `read_timeout` (a frozen
    process answers nothing). Two threads per URL, offset by half an interval, keep the
    resolution at a few milliseconds."""

    def __init__(self, urls: list[str], interval: float = 0.005, connect_timeout: float = 0.05,
                 read_timeout: float = 1.0, per_url: int = 2):
        self.urls, self.interval = urls, interval
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.answers: list[float] = []
        self.by_url: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.probe, args=(u, i * interval / per_url), daemon=True)
                        for u in urls for i in range(per_url)]

    def ok(self, url: str) -> bool:
        host, port = url.split("//")[1].split("/")[0].split(":")
        try:
            with socket.create_connection((host, int(port)), timeout=self.connect_timeout) as conn:
                conn.settimeout(self.read_timeout)
                conn.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                return conn.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def probe(self, url: str, offset: float) -> None:
        time.sleep(offset)
        while not self.stop.is_set():
            if self.ok(url):
                now = time.monotonic()
                with self.lock:
                    self.answers.append(now)
                    self.by_url.setdefault(url, []).append(now)
            time.sleep(self.interval)

    @property
    def longest(self) -> float:
        times = sorted(self.answers)
        return max((b - a for a, b in itertools.pairwise(times)), default=float("nan"))

    def wait_answer(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not any(self.ok(u) for u in self.urls):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> Prober:
        if not self.wait_answer(60):
            raise RuntimeError(f"the workload never answered at {self.urls}")
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        # The gap closes only once the service answers again.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.lock:
                recent = self.answers and time.monotonic() - self.answers[-1] < 0.05
            if recent:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_for_memory(read_logs, what: str) -> None:
    deadline = time.monotonic() + 120
    while "holding" not in read_logs():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} never reported holding its memory")
        time.sleep(0.1)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- methods -------------------------------------------------------------------------------------


def by_vimigrate(lab: Lab, mib: int, probe: Prober) -> dict:
    name = f"bench-vm-{uuid.uuid4().hex[:6]}"
    env = env_args(mib)
    try:
        lab.docker("provider-a", "run", "-d", "--name", name, "--runtime", "vimigrate", "-p", f"{PORT}:8080",
                   "--label", "io.vimigrate.managed=true", *env, lab.facts["images"]["web"])
        wait_for_memory(lambda: lab.docker("provider-a", "logs", name), name)
        cli = [str(ROOT / ".venv/bin/vimigrate"), "migrate", name]
        for prefix, p in (("from", "provider-a"), ("to", "provider-b")):
            cli += [f"--{prefix}-name", p, f"--{prefix}-docker-host", lab.host(p),
                    f"--{prefix}-public-address", lab.address(p)]
        with probe:
            started = time.monotonic()
            # The broker is this child process: its peak RSS is the broker's memory.
            child = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=lab.env)
            out, err = child.stdout.read(), child.stderr.read()
            _, status, usage = os.wait4(child.pid, 0)
            total = time.monotonic() - started
        if status != 0:
            raise RuntimeError(f"vimigrate migrate failed: {err.decode().strip()}")
        report = json.loads(out)
        stats = report["stats"]
        return {"total_s": total, "bytes": stats["transfer_bytes"], "broker_peak_rss_mib": usage.ru_maxrss / 1024,
                "broker_downtime_s": stats["downtime_ms"] / 1000, "method_taken": report["method"],
                "dump_ms": stats["dump_ms"], "restore_ms": stats["restore_ms"],
                "runtime_peak_rss_mib": stats["runtime_peak_rss_kib"] / 1024}
    finally:
        for p in ("provider-a", "provider-b"):
            lab.docker(p, "rm", "-f", name, check=False)


def env_args(mib: int) -> list[str]:
    """`docker run` / `podman run` arguments that set the workload's environment for `mib` MiB."""
    return [a for k, v in {**APP_ENV, "MEM_MIB": str(mib)}.items() for a in ("-e", f"{k}={v}")]


def by_docker(lab: Lab, mib: int, probe: Prober) -> dict:
    name = f"bench-dk-{uuid.uuid4().hex[:6]}"
    env = env_args(mib)
    ckdir = WORK / f"docker-{uuid.uuid4().hex[:8]}"
    ckdir.mkdir(parents=True)
    try:
        lab.docker("provider-a", "run", "-d", "--name", name, "--runtime", "runc", "--hostname", name,
                   "-p", f"{PORT}:8080", *env, lab.facts["images"]["web"])
        wait_for_memory(lambda: lab.docker("provider-a", "logs", name), name)
        lab.docker("provider-b", "create", "--name", name, "--runtime", "runc", "--hostname", name,
                   "-p", f"{PORT}:8080", *env, lab.facts["images"]["web"])
        b_root = Path(lab.docker("provider-b", "info", "-f", "{{.DockerRootDir}}"))
        b_id = lab.docker("provider-b", "inspect", "-f", "{{.Id}}", name)
        target = b_root / "containers" / b_id / "checkpoints"
        with probe:
            started = time.monotonic()
            lab.docker("provider-a", "checkpoint", "create", "--checkpoint-dir", str(ckdir), name, "bench")
            target.mkdir(parents=True, exist_ok=True)
            shutil.copytree(ckdir / "bench", target / "bench")
            lab.docker("provider-b", "start", "--checkpoint", "bench", name)
            total = time.monotonic() - started
        return {"total_s": total, "bytes": dir_bytes(ckdir / "bench")}
    finally:
        shutil.rmtree(ckdir, ignore_errors=True)
        for p in ("provider-a", "provider-b"):
            lab.docker(p, "rm", "-f", name, check=False)


def by_podman(lab: Lab, mib: int, probe: Prober) -> dict:
    name = f"bench-pm-{uuid.uuid4().hex[:6]}"
    env = env_args(mib)
    archive_a = WORK / f"podman-a-{name}.tar"
    archive_b = WORK / f"podman-b-{name}.tar"
    try:
        # This sandbox cannot raise limits (no CAP_SYS_RESOURCE): Podman's defaults must be lowered.
        lab.podman("provider-a", "run", "-d", "--name", name, "--hostname", name, "--ulimit", "nofile=1024:1024",
                   "--ulimit", "nproc=1024:1024", "-p", f"{PORT}:8080", *env, "localhost/vimigrate-lab/web:latest")
        wait_for_memory(lambda: lab.podman("provider-a", "logs", name), name)
        with probe:
            started = time.monotonic()
            lab.podman("provider-a", "container", "checkpoint", "--export", str(archive_a), "--compress", "none", name)
            shutil.copyfile(archive_a, archive_b)
            lab.podman("provider-b", "container", "restore", "--import", str(archive_b))
            total = time.monotonic() - started
        return {"total_s": total, "bytes": archive_a.stat().st_size}
    finally:
        for p in ("provider-a", "provider-b"):
            lab.podman(p, "rm", "-f", "-t", "0", name, check=False)
        for f in (archive_a, archive_b):
            f.unlink(missing_ok=True)


def by_criu(lab: Lab, mib: int, probe: Prober) -> dict:
    run = WORK / f"criu-{uuid.uuid4().hex[:8]}"
    dir_a, dir_b = run / "a", run / "b"
    dir_a.mkdir(parents=True)
    dir_b.mkdir()
    env = {**APP_ENV, "MEM_MIB": str(mib), "WEB_PORT": str(PORT), "HOSTNAME": "criu-bench"}
    # Output to /dev/null: a log file would have to exist with the same size on the destination.
    app = subprocess.Popen(lab.in_netns("provider-a", "unshare", "--pid", "--fork", "setsid", str(LABAPP)),
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # It listens once its memory is touched.
        if not Prober(lab.urls()).wait_answer(120):
            raise RuntimeError("the CRIU workload never answered")
        # The workload: the child of `unshare --fork`, pid 1 of its namespace.
        pid = int(sh(["pgrep", "-P", str(app.pid)]).stdout.split()[0])
        port = 18900
        with probe:
            started = time.monotonic()
            sh(lab.in_netns("provider-a", "criu", "dump", "-t", str(pid), "-D", str(dir_a), "--tcp-close",
                            "--skip-in-flight", "-o", "dump.log"))
            receiver = subprocess.Popen(lab.in_netns("provider-b", "sh", "-c",
                                                     f"nc -l -N 0.0.0.0 {port} | tar -C {dir_b} -xf -"))
            time.sleep(0.02)
            sh(lab.in_netns("provider-a", "sh", "-c",
                            f"tar -C {dir_a} -cf - . | nc -N {lab.address('provider-b')} {port}"))
            receiver.wait(timeout=120)
            restored = sh(lab.in_netns("provider-b", "criu", "restore", "-D", str(dir_b), "--restore-detached",
                                       "--tcp-close", "-o", "restore.log"), check=False)
            if restored.returncode != 0:
                errors = [line for line in (dir_b / "restore.log").read_text().splitlines() if "Error" in line]
                raise RuntimeError(f"criu restore failed: {' | '.join(errors[-5:])}")
            total = time.monotonic() - started
        return {"total_s": total, "bytes": dir_bytes(dir_a)}
    finally:
        sh(["pkill", "-KILL", "-f", f"^{LABAPP}"], check=False)
        app.wait(timeout=30)
        shutil.rmtree(run, ignore_errors=True)


METHODS = {"vimigrate": by_vimigrate, "docker": by_docker, "podman": by_podman, "criu": by_criu}


def prepare(lab: Lab, methods: list[str]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    if "podman" in methods:
        for p in ("provider-a", "provider-b"):
            if "vimigrate-lab/web" not in lab.podman(p, "images", "--format", "{{.Repository}}"):
                image = WORK / "web-image.tar"
                lab.docker("provider-a", "save", "-o", str(image), lab.facts["images"]["web"])
                lab.podman(p, "load", "-i", str(image))
            # Docker's FORWARD policy in the namespace drops new connections to Podman's
            # netavark subnet, which Podman 4.3 does not open itself.
            rule = ["FORWARD", "-d", "10.88.0.0/16", "-j", "ACCEPT"]
            if sh(lab.in_netns(p, "iptables", "-C", *rule), check=False).returncode != 0:
                sh(lab.in_netns(p, "iptables", "-I", *rule))


def summarize(results: dict, sizes: list[int], methods: list[str]) -> list[dict]:
    rows = []
    for mib in sizes:
        med = {m: statistics.median(r["downtime_s"] for r in results[(m, mib)]) for m in methods if (m, mib) in results}
        for m in methods:
            runs = results.get((m, mib))
            if not runs:
                continue
            down = [r["downtime_s"] for r in runs]
            rows.append({
                "method": m, "mib": mib, "downtime_median_s": med[m], "downtime_min_s": min(down),
                "downtime_max_s": max(down), "vs_criu": med[m] / med["criu"] if "criu" in med else None,
                "vs_podman": med[m] / med["podman"] if "podman" in med else None,
                "total_s": statistics.median(r["total_s"] for r in runs),
                "bytes": statistics.median(r["bytes"] for r in runs),
                "broker_peak_rss_mib": max((r.get("broker_peak_rss_mib") or 0) for r in runs) or None,
                "runs": len(runs),
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [("| method | memory | downtime, median (min-max) | vs CRIU alone | vs Podman | total | moved "
              "| broker peak RSS |"),
             "|---|---|---|---|---|---|---|---|"]
    ratio = lambda x: f"{x:.2f}x" if x is not None else "-"  # noqa: E731
    for r in rows:
        rss = f"{r['broker_peak_rss_mib']:.0f} MiB" if r["broker_peak_rss_mib"] else "-"
        lines.append(f"| {r['method']} | {r['mib']} MiB | {r['downtime_median_s']:.3f} s "
                     f"({r['downtime_min_s']:.3f}-{r['downtime_max_s']:.3f}) | {ratio(r['vs_criu'])} | "
                     f"{ratio(r['vs_podman'])} | {r['total_s']:.2f} s | {r['bytes'] / 1e6:.1f} MB | {rss} |")
    return "\n".join(lines)


def plot(rows: list[dict], methods: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        if not mine:
            continue
        xs = [r["mib"] for r in mine]
        ys = [r["downtime_median_s"] for r in mine]
        errs = [[y - r["downtime_min_s"] for y, r in zip(ys, mine, strict=True)],
                [r["downtime_max_s"] - y for y, r in zip(ys, mine, strict=True)]]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted({r["mib"] for r in rows}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("touched memory (MiB)")
    ax.set_ylabel("downtime seen by a client (s), median, min-max")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def machine_description() -> str:
    """This machine, as the results name it: cores, memory, kernel, Debian release."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, "
            f"kernel {platform.release()}, Debian {Path('/etc/debian_version').read_text().strip()}")


def stack_versions(lab: Lab) -> dict[str, str]:
    """The versions the results were measured with: provider-a's Docker, CRIU, Podman."""
    return {
        "docker": lab.docker("provider-a", "version", "-f", "{{.Server.Version}}"),
        "criu": sh(["criu", "--version"]).stdout.split("\n")[0],
        "podman": sh(["podman", "--version"], check=False).stdout.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500", help="MiB of touched memory, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, help="directory for <date>.md, .json and .png")
    args = parser.parse_args()
    lab = Lab(json.loads((ROOT / ".lab/lab.json").read_text()))
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    prepare(lab, methods)
    results: dict = {}
    # Methods interleaved run by run: drift of the machine over the run hits all of them alike.
    for mib in sizes:
        for run in range(args.runs):
            for method in methods:
                probe = Prober(lab.urls())
                figures = METHODS[method](lab, mib, probe)
                figures["downtime_s"] = probe.longest
                results.setdefault((method, mib), []).append(figures)
                broker = (f", broker {figures['broker_peak_rss_mib']:.0f} MiB RSS"
                          if "broker_peak_rss_mib" in figures else "")
                print(f"{method:<10} {mib:>4} MiB run {run + 1}: downtime {figures['downtime_s']:.3f} s, "
                      f"total {figures['total_s']:.2f} s, {figures['bytes'] / 1e6:.1f} MB{broker}",
                      file=sys.stderr, flush=True)
    rows = summarize(results, sizes, methods)
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        day = datetime.date.today().isoformat()
        machine, versions = machine_description(), stack_versions(lab)
        command = (f"make bench (scripts/bench/migration_bench.py --sizes {args.sizes} --runs {args.runs} "
                   f"--methods {args.methods})")
        (args.out / f"{day}.json").write_text(json.dumps(
            {"date": day, "machine": machine, "versions": versions, "command": command, "rows": rows,
             "runs": {f"{m}/{s}": v for (m, s), v in results.items()}}, indent=2))
        plot(rows, methods, args.out / f"{day}.png", f"migration downtime, {day}, {machine}")
        (args.out / f"{day}.table.md").write_text(f"Measured {day} on {machine}; {versions}.\n"
                                                  f"Command: `{command}`.\n\n{table}\n")
        print(f"wrote {args.out}/{day}.json, .table.md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
