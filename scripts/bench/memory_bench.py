"""Memory out of the freeze, measured: how long a client sees the service stop when its memory
moves stop-and-copy (with and without compression) or post-copy, on links as slow as real ones
between providers, against CRIU alone (dump to disk, through its page server, with lazy pages)
and Podman 4.3, all in one run, methods interleaved run by run.

Link profiles: the lab's links as they are, then 1 Gbit/s and 200 Mbit/s (tbf on the host ends
of both providers' veths; this kernel has no netem, so rate only), removed afterwards.
Workloads (the lab's web application, N MiB of touched memory): `incompressible` (random bytes),
`text` (JSON-like records: a realistic heap, compressible), `dirtying` (random bytes, 10 % of
them rewritten every second while the move runs).

Per row: downtime (the longest gap between two answers of an outside client probing every 5 ms,
as in migration_bench.py; median, min and max over the runs), total time (the migration's start
to the service running on B with all its memory there), time until the source is released
(from the freeze: its processes and their memory gone), bytes on the wire (counted on the host
end of provider-b's veth: everything that went into B during the move) and the compression
ratio (vimigrate's report). Not a pass/fail test: it prints figures and the issue's targets as
ratios against baselines measured in the same run.

Methods (`method` / `mode` in the results):
- vimigrate / stop-and-copy: `vimigrate migrate` (the CLI, as a user runs it; the direct path),
  compression `auto` (adaptive zstd) or `off`;
- vimigrate / post-copy: the same with `--memory post-copy`;
- criu-disk / stop-and-copy: CRIU alone, `criu dump` to a directory, tar | nc to B, restore;
- criu-page-server / stop-and-copy: CRIU alone, `criu page-server` on B, `criu dump
  --page-server` on A (the pages go straight to B), the other images by tar | nc, restore;
- criu-lazy / post-copy: CRIU alone, `criu dump --lazy-pages` on A, the images by tar | nc,
  `criu lazy-pages --page-server` and `criu restore --lazy-pages` on B (the post-copy floor);
- podman-4.3 / stop-and-copy: `podman container checkpoint --export`, the archive by nc over
  the link, `podman container restore --import` on B (Debian 12's Podman, `--runtime runc`);
- podman-newest / stop-and-copy: the same with the newest Podman Debian offers (sid's, unpacked by
  scripts/lab/install-podman.sh, with its own runc 1.3, conmon and netavark).

pre-copy is not here: no provider kernel of the lab's host tracks dirty memory; it runs in the
emulated guest (tests/guest), where only ratios within the guest mean anything.

Usage: .venv/bin/python scripts/bench/memory_bench.py [--mib 500] [--runs 3]
       [--links none,1000,200] [--out scripts/bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from migration_bench import (
    APP_ENV,
    LABAPP,
    PORT,
    ROOT,
    WORK,
    Lab,
    Prober,
    dir_bytes,
    machine_description,
    prepare,
    sh,
    stack_versions,
    wait_for_memory,
)

WORKLOADS: dict[str, dict[str, str]] = {
    "incompressible": {},
    "text": {"MEM_KIND": "text"},
    "dirtying": {"DIRTY_PERCENT": "10"},
}
NC_PORT = 18900
CRIU_PORT = 18901


class Run:
    """One migration's figures, filled by a method."""

    def __init__(self) -> None:
        self.total_s = float("nan")
        self.source_released_s = float("nan")
        self.compression_ratio: float | None = None
        self.broker_peak_rss_mib: float | None = None
        self.extra: dict = {}


def bytes_into(lab: Lab, provider: str) -> int:
    """Bytes sent so far into `provider`'s namespace over its veth (the host end's tx)."""
    veth = lab.facts["providers"][provider]["veth"]
    return int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())


@contextlib.contextmanager
def shaped_links(lab: Lab, mbit: int | None) -> Iterator[None]:
    """Both providers' links limited to `mbit` Mbit/s (tbf), put back afterwards."""
    veths = [lab.facts["providers"][p]["veth"] for p in ("provider-a", "provider-b")]
    if mbit is None:
        yield
        return
    try:
        for veth in veths:
            sh(["tc", "qdisc", "replace", "dev", veth, "root", "tbf", "rate", f"{mbit}mbit", "burst", "512kb",
                "latency", "100ms"])
        yield
    finally:
        for veth in veths:
            sh(["tc", "qdisc", "del", "dev", veth, "root"], check=False)


def app_env(mib: int, workload: str) -> dict[str, str]:
    return {**APP_ENV, "MEM_MIB": str(mib), **WORKLOADS[workload]}


def env_flags(env: dict[str, str]) -> list[str]:
    return [a for k, v in env.items() for a in ("-e", f"{k}={v}")]


def stream_dir(lab: Lab, src: Path, dst: Path) -> None:
    """tar | nc from provider-a's namespace into provider-b's, over the (shaped) link."""
    receive = f"nc -l -N 0.0.0.0 {NC_PORT} | tar -C {dst} -xf -"
    receiver = subprocess.Popen(lab.in_netns("provider-b", "sh", "-c", receive))
    time.sleep(0.02)
    sh(lab.in_netns("provider-a", "sh", "-c", f"tar -C {src} -cf - . | nc -N {lab.address('provider-b')} {NC_PORT}"))
    receiver.wait(timeout=600)


def stream_file(lab: Lab, src: Path, dst: Path) -> None:
    """One file from provider-a's namespace into provider-b's by nc, over the (shaped) link."""
    receiver = subprocess.Popen(lab.in_netns("provider-b", "sh", "-c", f"nc -l -N 0.0.0.0 {NC_PORT} > {dst}"))
    time.sleep(0.02)
    sh(lab.in_netns("provider-a", "sh", "-c", f"nc -N {lab.address('provider-b')} {NC_PORT} < {src}"))
    receiver.wait(timeout=600)


# --- vimigrate -----------------------------------------------------------------------------------


def by_vimigrate(memory: str, compression: str) -> Callable[[Lab, int, str, Prober], Run]:
    def method(lab: Lab, mib: int, workload: str, probe: Prober) -> Run:
        name = f"bench-mem-{uuid.uuid4().hex[:6]}"
        try:
            lab.docker("provider-a", "run", "-d", "--name", name, "--runtime", "vimigrate", "-p", f"{PORT}:8080",
                       "--label", "io.vimigrate.managed=true", *env_flags(app_env(mib, workload)),
                       lab.facts["images"]["web"])
            wait_for_memory(lambda: lab.docker("provider-a", "logs", name), name)
            cli = [str(ROOT / ".venv/bin/vimigrate"), "migrate", name, "--memory", memory,
                   "--compression", compression]
            for prefix, p in (("from", "provider-a"), ("to", "provider-b")):
                cli += [f"--{prefix}-name", p, f"--{prefix}-docker-host", lab.host(p),
                        f"--{prefix}-public-address", lab.address(p)]
            run = Run()
            with probe, tempfile.TemporaryFile() as log:
                started = time.monotonic()
                # The broker is this child process: its peak RSS is the broker's memory.
                child = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=log, env=lab.env)
                assert child.stdout is not None
                out = child.stdout.read()
                _, status, usage = os.wait4(child.pid, 0)
                child.returncode = os.waitstatus_to_exitcode(status)
                run.total_s = time.monotonic() - started
                log.seek(0)
                err = log.read().decode(errors="replace")
            if child.returncode != 0:
                raise RuntimeError(f"vimigrate migrate failed: {err.strip()[-2000:]}")
            run.broker_peak_rss_mib = usage.ru_maxrss / 1024
            stats = json.loads(out)["stats"]
            # Freeze to processes gone: the dump's end; post-copy: the restore, then every page.
            run.source_released_s = (stats["downtime_ms"] + stats["postcopy_ms"]) / 1000 if memory == "post-copy" \
                else stats["dump_ms"] / 1000
            # The stream's ratio: images and files; post-copy's pages go as they are, so its
            # ratio here counts them in (the report's is the images' alone).
            pages = stats.get("page_bytes", 0) if memory == "post-copy" else 0
            wire = stats.get("wire_bytes", 0)
            run.compression_ratio = (stats["transfer_bytes"] + pages) / (wire + pages) if wire else None
            run.extra = {"broker_downtime_s": stats["downtime_ms"] / 1000, "dump_ms": stats["dump_ms"],
                         "restore_ms": stats["restore_ms"], "postcopy_ms": stats.get("postcopy_ms", 0),
                         "report_wire_bytes": wire, "page_bytes": pages, "transfer_bytes": stats["transfer_bytes"],
                         "runtime_peak_rss_mib": stats["runtime_peak_rss_kib"] / 1024}
            return run
        finally:
            for p in ("provider-a", "provider-b"):
                lab.docker(p, "rm", "-f", name, check=False)

    return method


# --- CRIU alone ----------------------------------------------------------------------------------


@contextlib.contextmanager
def criu_workload(lab: Lab, mib: int, workload: str) -> Iterator[int]:
    """The workload as a plain process, pid 1 of its own pid namespace, in provider-a's network
    namespace; yields its pid. Everything it (and its restored copy) left is killed afterwards."""
    env = {**app_env(mib, workload), "WEB_PORT": str(PORT), "HOSTNAME": "criu-bench"}
    # Output to /dev/null: a log file would have to exist with the same size on the destination.
    app = subprocess.Popen(lab.in_netns("provider-a", "unshare", "--pid", "--fork", "setsid", str(LABAPP)),
                           env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # It listens once its memory is touched.
        if not Prober(lab.urls()).wait_answer(120):
            raise RuntimeError("the CRIU workload never answered")
        yield int(sh(["pgrep", "-P", str(app.pid)]).stdout.split()[0])
    finally:
        sh(["pkill", "-KILL", "-f", f"^{LABAPP}"], check=False)
        sh(["pkill", "-KILL", "-f", f"criu .*-p(ort)? {CRIU_PORT}"], check=False)
        app.wait(timeout=30)


def criu_restore(lab: Lab, images: Path, *extra: str) -> None:
    restored = sh(lab.in_netns("provider-b", "criu", "restore", "-D", str(images), "--restore-detached",
                               "--tcp-close", "-o", "restore.log", *extra), check=False)
    if restored.returncode != 0:
        errors = [line for line in (images / "restore.log").read_text().splitlines() if "Error" in line]
        raise RuntimeError(f"criu restore failed: {' | '.join(errors[-5:])}")


@contextlib.contextmanager
def image_dirs() -> Iterator[tuple[Path, Path]]:
    run = WORK / f"criu-{uuid.uuid4().hex[:8]}"
    (run / "a").mkdir(parents=True)
    (run / "b").mkdir()
    try:
        yield run / "a", run / "b"
    finally:
        shutil.rmtree(run, ignore_errors=True)


def wait_listening(lab: Lab, provider: str, port: int, seconds: float = 60) -> None:
    """Until something listens on `port` in `provider`'s namespace (CRIU's page servers take one
    connection only: no probe may connect)."""
    deadline = time.monotonic() + seconds
    while f":{port} " not in sh(lab.in_netns(provider, "ss", "-Hltn")).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} in {provider}'s namespace")
        time.sleep(0.005)


def by_criu_disk(lab: Lab, mib: int, workload: str, probe: Prober) -> Run:
    run = Run()
    with image_dirs() as (dir_a, dir_b), criu_workload(lab, mib, workload) as pid:
        with probe:
            started = time.monotonic()
            sh(lab.in_netns("provider-a", "criu", "dump", "-t", str(pid), "-D", str(dir_a), "--tcp-close",
                            "--skip-in-flight", "-o", "dump.log"))
            run.source_released_s = time.monotonic() - started
            stream_dir(lab, dir_a, dir_b)
            criu_restore(lab, dir_b)
            run.total_s = time.monotonic() - started
        run.extra = {"image_bytes": dir_bytes(dir_a)}
    return run


def by_criu_page_server(lab: Lab, mib: int, workload: str, probe: Prober) -> Run:
    run = Run()
    with image_dirs() as (dir_a, dir_b), criu_workload(lab, mib, workload) as pid:
        # Ready before the freeze, as a destination is prepared.
        server = subprocess.Popen(lab.in_netns("provider-b", "criu", "page-server", "-D", str(dir_b),
                                               "--port", str(CRIU_PORT), "-o", "page-server.log"))
        try:
            wait_listening(lab, "provider-b", CRIU_PORT)
            with probe:
                started = time.monotonic()
                sh(lab.in_netns("provider-a", "criu", "dump", "-t", str(pid), "-D", str(dir_a), "--tcp-close",
                                "--skip-in-flight", "--page-server", "--address", lab.address("provider-b"),
                                "--port", str(CRIU_PORT), "-o", "dump.log"))
                run.source_released_s = time.monotonic() - started
                server.wait(timeout=120)
                stream_dir(lab, dir_a, dir_b)
                criu_restore(lab, dir_b)
                run.total_s = time.monotonic() - started
        finally:
            server.kill()
            server.wait()
    return run


def by_criu_lazy(lab: Lab, mib: int, workload: str, probe: Prober) -> Run:
    run = Run()
    with image_dirs() as (dir_a, dir_b), criu_workload(lab, mib, workload) as pid:
        dump = lazy = None
        try:
            with probe:
                started = time.monotonic()
                dump = subprocess.Popen(lab.in_netns(
                    "provider-a", "criu", "dump", "-t", str(pid), "-D", str(dir_a), "--tcp-close",
                    "--skip-in-flight", "--lazy-pages", "--address", lab.address("provider-a"), "--port",
                    str(CRIU_PORT), "-o", "dump.log"))
                # The images but the memory are written once CRIU's page server listens.
                wait_listening(lab, "provider-a", CRIU_PORT, seconds=120)
                stream_dir(lab, dir_a, dir_b)
                lazy = subprocess.Popen(lab.in_netns(
                    "provider-b", "criu", "lazy-pages", "--page-server", "--address", lab.address("provider-a"),
                    "--port", str(CRIU_PORT), "-D", str(dir_b), "-o", "lazy-pages.log"))
                deadline = time.monotonic() + 60
                while not (dir_b / "lazy-pages.socket").exists():
                    if time.monotonic() > deadline or lazy.poll() is not None:
                        raise RuntimeError("criu lazy-pages never opened its socket")
                    time.sleep(0.002)
                criu_restore(lab, dir_b, "--lazy-pages")
                # The source is released once every page went (the dump ends then).
                if dump.wait(timeout=900) != 0:
                    raise RuntimeError(f"criu dump --lazy-pages failed: see {dir_a}/dump.log")
                run.source_released_s = time.monotonic() - started
                lazy.wait(timeout=120)
                run.total_s = time.monotonic() - started
        finally:
            for process in (dump, lazy):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    return run


# --- Podman --------------------------------------------------------------------------------------


#: The newest Podman Debian offers, unpacked by scripts/lab/install-podman.sh.
PODMAN_NEW = Path("/opt/vimigrate-engines/podman-sid")
#: Its containers' network: a bridge and subnet apart from Podman 4.3's default one (both
#: Podmans run in the same provider namespaces).
PODMAN_NEW_NET = ("vmbench", "10.89.0.0/24", "podman9")


def podman_new(lab: Lab, p: str, *args: str, check: bool = True) -> str:
    """Podman 5 on provider `p`: its own storage, its prefix's containers.conf."""
    state = f"podman-sid-{p}"
    cmd = lab.in_netns(p, "env", f"CONTAINERS_CONF={PODMAN_NEW}/containers.conf",
                       "PODMAN_IGNORE_CGROUPSV1_WARNING=1", str(PODMAN_NEW / "usr/bin/podman"),
                       "--root", f"/var/lib/vimigrate-lab/{state}/root", "--runroot",
                       f"/run/vimigrate-lab/{state}/runroot", "--tmpdir", f"/run/vimigrate-lab/{state}/tmp", *args)
    return sh(cmd, check=check).stdout.strip()


def prepare_podman_new(lab: Lab) -> None:
    """The web image loaded into each provider's Podman 5, its network, and the forwarding rule
    Docker's FORWARD policy would otherwise drop (as migration_bench.prepare does for 4.3)."""
    name, subnet, bridge = PODMAN_NEW_NET
    image = WORK / "web-image.tar"
    if not image.exists():
        lab.docker("provider-a", "save", "-o", str(image), lab.facts["images"]["web"])
    for p in ("provider-a", "provider-b"):
        if "vimigrate-lab/web" not in podman_new(lab, p, "images", "--format", "{{.Repository}}"):
            podman_new(lab, p, "load", "-i", str(image))
        if name not in podman_new(lab, p, "network", "ls", "--format", "{{.Name}}").split():
            podman_new(lab, p, "network", "create", "--subnet", subnet, "--interface-name", bridge, name)
        rule = ["FORWARD", "-d", subnet, "-j", "ACCEPT"]
        if sh(lab.in_netns(p, "iptables", "-C", *rule), check=False).returncode != 0:
            sh(lab.in_netns(p, "iptables", "-I", *rule))


def by_podman(newest: bool) -> Callable[[Lab, int, str, Prober], Run]:
    """Podman's own migration: checkpoint --export, the archive over the link, restore --import."""
    def podman(lab: Lab, p: str, *args: str, check: bool = True) -> str:
        return podman_new(lab, p, *args, check=check) if newest else lab.podman(p, *args, check=check)

    network = ("--network", PODMAN_NEW_NET[0]) if newest else ()

    def method(lab: Lab, mib: int, workload: str, probe: Prober) -> Run:
        name = f"bench-pm-{uuid.uuid4().hex[:6]}"
        archive_a, archive_b = WORK / f"podman-a-{name}.tar", WORK / f"podman-b-{name}.tar"
        run = Run()
        try:
            # This sandbox cannot raise limits (no CAP_SYS_RESOURCE): Podman's defaults must be lowered.
            podman(lab, "provider-a", "run", "-d", "--name", name, "--hostname", name, *network, "--ulimit",
                   "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "-p", f"{PORT}:8080",
                   *env_flags(app_env(mib, workload)), "localhost/vimigrate-lab/web:latest")
            wait_for_memory(lambda: podman(lab, "provider-a", "logs", name), name)
            with probe:
                started = time.monotonic()
                podman(lab, "provider-a", "container", "checkpoint", "--export", str(archive_a), "--compress",
                       "none", name)
                run.source_released_s = time.monotonic() - started
                stream_file(lab, archive_a, archive_b)
                podman(lab, "provider-b", "container", "restore", "--import", str(archive_b))
                run.total_s = time.monotonic() - started
            return run
        finally:
            for p in ("provider-a", "provider-b"):
                podman(lab, p, "rm", "-f", "-t", "0", name, check=False)
            for f in (archive_a, archive_b):
                f.unlink(missing_ok=True)

    return method


# --- the run -------------------------------------------------------------------------------------

# A method: (method, mode, compression).
SAC_AUTO = ("vimigrate", "stop-and-copy", "auto")
SAC_OFF = ("vimigrate", "stop-and-copy", "off")
POST = ("vimigrate", "post-copy", "auto")
CRIU_PS = ("criu-page-server", "stop-and-copy", None)
CRIU_LAZY = ("criu-lazy", "post-copy", None)
# Each method -> how it runs, in the order the runs interleave.
METHODS: dict[tuple[str, str, str | None], Callable[[Lab, int, str, Prober], Run]] = {
    SAC_AUTO: by_vimigrate("stop-and-copy", "auto"),
    SAC_OFF: by_vimigrate("stop-and-copy", "off"),
    POST: by_vimigrate("post-copy", "auto"),
    ("criu-disk", "stop-and-copy", None): by_criu_disk,
    CRIU_PS: by_criu_page_server,
    CRIU_LAZY: by_criu_lazy,
    ("podman-4.3", "stop-and-copy", None): by_podman(newest=False),
    ("podman-newest", "stop-and-copy", None): by_podman(newest=True),
}
ALL_METHODS = list(METHODS)


def plan(links: list[int | None]) -> list[tuple[int | None, str, list[tuple]]]:
    """(link, workload, methods) in the order they run. Incompressible memory by every method on
    every link; compressible memory where compression can pay (the shaped links), with and
    without it; dirtying memory by the vimigrate modes and CRIU's page server."""
    cells = []
    for link in links:
        cells.append((link, "incompressible", [m for m in ALL_METHODS if m != SAC_OFF]))
        if link is not None:
            cells.append((link, "text", [SAC_AUTO, SAC_OFF, CRIU_PS]))
        cells.append((link, "dirtying", [SAC_AUTO, POST, CRIU_PS]))
    return cells


def label(method: tuple) -> str:
    name, mode, compression = method
    return f"{name} {mode}" + (f" (compression {compression})" if compression else "")


def summarize(results: dict) -> list[dict]:
    rows = []
    for (link, workload, method, mib), runs in results.items():
        down = [r["downtime_s"] for r in runs]
        ratios = [r["compression_ratio"] for r in runs if r["compression_ratio"]]
        rss = [r["broker_peak_rss_mib"] for r in runs if r["broker_peak_rss_mib"]]
        rows.append({
            "method": method[0], "mode": method[1], "compression": method[2], "link_mbit": link,
            "workload": workload, "mib": mib, "downtime_s": statistics.median(down), "downtime_min_s": min(down),
            "downtime_max_s": max(down), "total_s": statistics.median(r["total_s"] for r in runs),
            "source_released_s": statistics.median(r["source_released_s"] for r in runs),
            "wire_bytes": int(statistics.median(r["wire_bytes"] for r in runs)),
            "compression_ratio": statistics.median(ratios) if ratios else None,
            "broker_peak_rss_mib": max(rss) if rss else None, "runs": len(runs),
        })
    return rows


def find(rows: list[dict], link, workload: str, method: tuple) -> dict | None:
    return next((r for r in rows if r["link_mbit"] == link and r["workload"] == workload
                 and (r["method"], r["mode"], r["compression"]) == method), None)


def targets(rows: list[dict], links: list[int | None]) -> list[dict]:
    """The issue's targets, each as measured: value, bound, met."""
    checks = []

    def check(what: str, link, value: float | None, bound: float | None, unit: str = "") -> None:
        if value is None or bound is None:
            checks.append({"target": what, "link_mbit": link, "value": None, "bound": bound, "met": None})
            return
        checks.append({"target": what, "link_mbit": link, "value": round(value, 3), "bound": round(bound, 3),
                       "unit": unit, "met": value <= bound})

    def downtime(link, workload: str, method: tuple) -> float | None:
        row = find(rows, link, workload, method)
        return row["downtime_s"] if row else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for link in links:
        post = downtime(link, "incompressible", POST)
        check("post-copy downtime (s) <= 0.3 s", link, post, 0.3, "s")
        check("post-copy downtime / CRIU lazy pages <= 1.3", link,
              ratio(post, downtime(link, "incompressible", CRIU_LAZY)), 1.3)
        check("stop-and-copy downtime / CRIU page server <= 1.2", link,
              ratio(downtime(link, "incompressible", SAC_AUTO), downtime(link, "incompressible", CRIU_PS)), 1.2)
        if link == 200:
            # At least 2x less downtime with compression: off / auto >= 2, said as auto / off <= 0.5.
            check("compressible heap: downtime with / without compression <= 0.5", link,
                  ratio(downtime(link, "text", SAC_AUTO), downtime(link, "text", SAC_OFF)), 0.5)
    rss = [r["broker_peak_rss_mib"] for r in rows if r["broker_peak_rss_mib"]]
    check("broker peak RSS (MiB) < 100", None, max(rss) if rss else None, 100, "MiB")
    return checks


def markdown(rows: list[dict], checks: list[dict]) -> str:
    out = []
    for link in dict.fromkeys(r["link_mbit"] for r in rows):
        out += [f"### Link: {'as it is (unshaped)' if link is None else f'{link} Mbit/s'}", "",
                ("| workload | method | mode | downtime, median (min-max) | total | source released | on the wire "
                 "| ratio | broker RSS |"), "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["link_mbit"] == link):
            method = r["method"] + (f" ({r['compression']})" if r["compression"] else "")
            ratio = f"{r['compression_ratio']:.2f}" if r["compression_ratio"] else "-"
            rss = f"{r['broker_peak_rss_mib']:.0f} MiB" if r["broker_peak_rss_mib"] else "-"
            out.append(f"| {r['workload']} | {method} | {r['mode']} | {r['downtime_s']:.3f} s "
                       f"({r['downtime_min_s']:.3f}-{r['downtime_max_s']:.3f}) | {r['total_s']:.2f} s | "
                       f"{r['source_released_s']:.2f} s | {r['wire_bytes'] / 1e6:.1f} MB | {ratio} | {rss} |")
        out.append("")
    out += ["### Targets", "", "| target | link | measured | bound | met |", "|---|---|---|---|---|"]
    for c in checks:
        link = "-" if c["link_mbit"] is None else f"{c['link_mbit']} Mbit/s"
        link = "unshaped" if c["link_mbit"] is None and "RSS" not in c["target"] else link
        met = {True: "yes", False: "**no**", None: "not measured"}[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']}"
        out.append(f"| {c['target']} | {link} | {value} | {c['bound']} | {met} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = list(dict.fromkeys(r["link_mbit"] for r in rows))
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 5), dpi=110, squeeze=False)
    for ax, link in zip(axes[0], links, strict=True):
        mine = [r for r in rows if r["link_mbit"] == link]
        labels = [f"{r['workload']}: {r['method']}" + (f" ({r['compression']})" if r["compression"] else "")
                  + f" {r['mode']}" for r in mine]
        ys = [r["downtime_s"] for r in mine]
        errs = [[y - r["downtime_min_s"] for y, r in zip(ys, mine, strict=True)],
                [r["downtime_max_s"] - y for y, r in zip(ys, mine, strict=True)]]
        colors = ["tab:blue" if r["method"] == "vimigrate" else "tab:gray" for r in mine]
        ax.barh(range(len(mine)), ys, xerr=errs, color=colors, capsize=2)
        ax.set_yticks(range(len(mine)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("downtime seen by a client (s), median, min-max")
        ax.set_title("unshaped link" if link is None else f"{link} Mbit/s", fontsize=9)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="MiB of touched memory")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--links", default="none,1000,200", help="Mbit/s per profile, `none` for unshaped")
    parser.add_argument("--out", type=Path, help="directory for <date>-memory.table.md, .json and .png")
    parser.add_argument("--only", help="run only the methods whose label contains this (a quick look)")
    args = parser.parse_args()
    lab = Lab(json.loads((ROOT / ".lab/lab.json").read_text()))
    links = [None if s == "none" else int(s) for s in args.links.split(",")]
    prepare(lab, ["podman"])
    prepare_podman_new(lab)
    results: dict = {}
    for link, workload, all_methods in plan(links):
        methods = [m for m in all_methods if not args.only or args.only in label(m)]
        with shaped_links(lab, link):
            # Methods interleaved run by run: drift of the machine hits all of them alike.
            for run_no in range(args.runs):
                for method in methods:
                    probe = Prober(lab.urls())
                    before = bytes_into(lab, "provider-b")
                    run = METHODS[method](lab, args.mib, workload, probe)
                    figures = {"downtime_s": probe.longest, "total_s": run.total_s,
                               "source_released_s": run.source_released_s,
                               "wire_bytes": bytes_into(lab, "provider-b") - before,
                               "compression_ratio": run.compression_ratio,
                               "broker_peak_rss_mib": run.broker_peak_rss_mib, **run.extra}
                    results.setdefault((link, workload, method, args.mib), []).append(figures)
                    print(f"{'unshaped' if link is None else f'{link} Mbit/s':>10} {workload:<14} {label(method):<42}"
                          f" run {run_no + 1}: downtime {figures['downtime_s']:.3f} s, total {run.total_s:.2f} s, "
                          f"released {run.source_released_s:.2f} s, wire {figures['wire_bytes'] / 1e6:.1f} MB",
                          file=sys.stderr, flush=True)
    rows = summarize(results)
    checks = targets(rows, links)
    table = markdown(rows, checks)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        day = datetime.date.today().isoformat()
        machine = machine_description()
        versions = {**stack_versions(lab),
                    "podman_newest": sh([str(PODMAN_NEW / "usr/bin/podman"), "--version"], check=False).stdout.strip()}
        command = (f"make bench-memory (scripts/bench/memory_bench.py --mib {args.mib} --runs {args.runs} "
                   f"--links {args.links})")
        stem = args.out / f"{day}-memory"
        stem.with_suffix(".json").write_text(json.dumps(
            {"date": day, "machine": machine, "versions": versions, "command": command, "rows": rows,
             "targets": checks,
             "runs": {f"{link}/{workload}/{label(method)}/{mib}": v
                      for (link, workload, method, mib), v in results.items()}}, indent=2))
        plot(rows, stem.with_suffix(".png"), f"memory out of the freeze, {args.mib} MiB, {day}, {machine}")
        stem.with_suffix(".table.md").write_text(f"Measured {day} on {machine}; {versions}.\n"
                                                 f"Command: `{command}`.\n\n{table}\n")
        print(f"wrote {stem}.json, .table.md and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
