"""The ``vimigrate`` command line: the engine without Cloudify.

Output is JSON on stdout so scripts can read it; errors go to stderr with exit status 2 for bad
input and 1 for everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO, cast

from . import _native
from .shapes import GroupReport, HealReport, MigrationOptions, MigrationReport, ProgressEvent, ProviderConfig

#: The provider fields the command line takes (`--[from-|to-]FIELD`), the engine's own names.
_PROVIDER_FIELDS = ("name", "docker_host", "allow_plain_tcp", "public_address", "transfer_address", "transfer_port")


def _provider_config(args: argparse.Namespace, prefix: str = "") -> ProviderConfig:
    """The engine's provider configuration from the flags given; those not given are left out,
    so that the engine's defaults apply."""
    def get(key: str) -> Any:
        return getattr(args, prefix + key)

    config: dict[str, Any] = {key: get(key) for key in _PROVIDER_FIELDS if get(key) is not None}
    if args.timeout_secs is not None:
        config["timeout_secs"] = args.timeout_secs
    tls = {key: get(f"tls_{key}") for key in ("ca", "cert", "key") if get(f"tls_{key}")}
    if tls:
        config["tls"] = tls
    return cast(ProviderConfig, config)


def _add_provider_args(parser: argparse.ArgumentParser, prefix: str = "", default_name: str = "provider") -> None:
    flag = f"--{prefix.replace('_', '-')}" if prefix else "--"
    parser.add_argument(f"{flag}name", dest=f"{prefix}name", default=default_name,
                        help="provider name used in messages")
    parser.add_argument(f"{flag}docker-host", dest=f"{prefix}docker_host", required=True,
                        help="unix:///path/docker.sock or tcp://HOST:PORT")
    parser.add_argument(f"{flag}tls-ca", dest=f"{prefix}tls_ca", help="CA certificate (PEM file) for tcp://")
    parser.add_argument(f"{flag}tls-cert", dest=f"{prefix}tls_cert", help="client certificate (PEM file) for tcp://")
    parser.add_argument(f"{flag}tls-key", dest=f"{prefix}tls_key", help="client key (PEM file) for tcp://")
    parser.add_argument(f"{flag}allow-plain-tcp", dest=f"{prefix}allow_plain_tcp", action="store_true",
                        default=None, help="allow tcp:// without TLS")
    parser.add_argument(f"{flag}public-address", dest=f"{prefix}public_address",
                        help="address where the provider's published ports answer")
    parser.add_argument(f"{flag}transfer-address", dest=f"{prefix}transfer_address",
                        help="address the other host reaches this host's vimigrate-runtime at "
                             "(default: public address)")
    parser.add_argument(f"{flag}transfer-port", dest=f"{prefix}transfer_port", type=int,
                        help="port this host's vimigrate-runtime receives on (default: any free port)")


def _add_timeout_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout-secs", "--timeout", dest="timeout_secs", type=int,
                        help="seconds one call to a provider may take (default: the engine's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimigrate", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the engine version")
    sub.add_parser("self-check", help="check the native module and its runtime")
    probe = sub.add_parser("probe", help="report a provider's versions and capabilities")
    _add_provider_args(probe)
    _add_timeout_arg(probe)
    migrate = sub.add_parser("migrate", help="live-migrate running containers to another provider (several: as one "
                                             "group, under one freeze)")
    migrate.add_argument("containers", nargs="+", metavar="container",
                         help="name or id of a running container on the source; several move as one group: "
                              "prepared together, frozen together, restored together, and all rolled back if one "
                              "fails")
    _add_provider_args(migrate, "from_", "source")
    _add_provider_args(migrate, "to_", "destination")
    migrate.add_argument("--keep-source", action="store_true", help="keep the stopped source container")
    migrate.add_argument("--no-verify", action="store_true", help="skip reading the checkpoint back before restoring")
    migrate.add_argument("--no-criu-check", action="store_true", help="skip the CRIU probe on both hosts")
    migrate.add_argument("--checkpoint-name", help="checkpoint name (default vimigrate-<time>)")
    migrate.add_argument("--method", choices=["auto", "direct", "docker"], default="auto",
                         help="direct: host to host through vimigrate-runtime; docker: Docker's checkpoint API; "
                              "auto (default): direct when both hosts offer it")
    migrate.add_argument("--memory", choices=["stop-and-copy", "pre-copy", "post-copy", "auto"],
                         default="stop-and-copy",
                         help="stop-and-copy (default): the memory moves inside the freeze, nothing is lost on any "
                              "failure; pre-copy: pre-dumped while the service runs, the freeze carries what was "
                              "dirtied since (the source's kernel must track dirty memory); auto: pre-copy where it "
                              "can, else stop-and-copy; post-copy: the destination runs once all but the memory "
                              "arrived and faults its pages in from the source (the shortest interruption), but a "
                              "failure of the source or the link before every page arrived loses what the service "
                              "did since")
    migrate.add_argument("--compression", choices=["auto", "zstd", "off"], default="auto",
                         help="auto (default): zstd on the chunks that shrink while the link is slower than the "
                              "compressor; zstd: on every chunk that shrinks; off")
    migrate.add_argument("--ignore-host-check", action="append", default=[],
                         choices=["cpu", "criu", "cgroup", "engine"], dest="ignore_host_checks",
                         help="override one of the preflight's host checks (repeatable): cpu (a CPU feature the "
                              "destination lacks), criu (a CRIU that fails its check or is older), cgroup (another "
                              "cgroup version), engine "
                              "(Docker's own restore on Docker >= 28)")
    _add_timeout_arg(migrate)
    heal = sub.add_parser("heal", help="after a migration that did not finish: make a container run on exactly "
                                       "one of two providers again and remove what the migration left")
    heal.add_argument("container", help="name of the container")
    heal.add_argument("--restart-from-image", action="store_true",
                      help="when the container runs nowhere and no checkpoint can resume it (a post-copy lost it), "
                           "start it afresh from its image: its process state is lost, its writable layer and "
                           "volumes stay as they are")
    _add_provider_args(heal, "from_", "source")
    _add_provider_args(heal, "to_", "destination")
    _add_timeout_arg(heal)
    return parser


class _Progress:
    """Prints phases and bytes moved to stderr; rewrites one line per phase on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_print = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        # A group's events name their member.
        who = f"{event['container']}: " if "container" in event else ""
        if event["event"] == "phase":
            if self.tty:
                self.stream.write("\n")
            self.stream.write(f"{who}{event['phase']}...")
            self.stream.write("\n" if not self.tty else "")
        else:
            now = time.monotonic()
            if self.tty and now - self.last_print > 0.1:
                self.stream.write(f"\r{who}{event['phase']}... {event['bytes'] / 1e6:.1f} MB")
                self.last_print = now
        self.stream.flush()


def _print_stats(report: MigrationReport) -> None:
    stats = report["stats"]
    print(f"migrated {report['container']} from {report['source']} to {report['destination']} "
          f"({report['destination_id'][:12]})", file=sys.stderr)
    reason = f" ({report['method_reason']})" if report["method_reason"] else ""
    print(f"  {'method':<18} {report['method']}{reason}", file=sys.stderr)
    print(f"  {'memory':<18} {report['memory']} ({report['memory_reason']})", file=sys.stderr)
    print(f"  {'compression':<18} {report['compression']}", file=sys.stderr)
    rows = [(k, v) for k, v in stats.items() if not k.startswith("criu_")]
    for key, value in rows:
        print(f"  {key:<18} {value}", file=sys.stderr)
    for group, criu in (("criu.dump", stats["criu_dump"]), ("criu.restore", stats["criu_restore"])):
        for key, count in (criu or {}).items():
            print(f"  {group}.{key:<13} {count}", file=sys.stderr)
    for warning in report["warnings"]:
        print(f"  warning: {warning}", file=sys.stderr)


def _print_group(report: GroupReport) -> None:
    stats = report["stats"]
    for member in report["members"]:
        _print_stats(member)
    names = ", ".join(m["container"] for m in report["members"])
    print(f"group of {stats['members']} ({names}) on {report['destination']}: downtime {stats['downtime_ms']} ms "
          f"(longest member {stats['longest_member_downtime_ms']} ms), freezes within "
          f"{stats['freeze_spread_ms']:.2f} ms, total {stats['total_ms']} ms", file=sys.stderr)


def heal_how(report: HealReport) -> str:
    """How heal brought the container back, for the line saying where it runs."""
    if report["restarted_from_image"]:
        return " (restarted from its image: its process state was lost)"
    return " (restored from its checkpoint)" if report["resumed"] else ""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: object
    try:
        if args.command == "version":
            result = _native.version()
        elif args.command == "self-check":
            result = _native.self_check()
        elif args.command == "probe":
            result = _native.Provider.connect(_provider_config(args)).probe()
        elif args.command == "heal":
            providers = [_native.Provider.connect(_provider_config(args, p)) for p in ("from_", "to_")]
            healed = _native.heal(providers, args.container, restart_from_image=args.restart_from_image)
            print(f"{args.container} runs on {healed['runs_on']}{heal_how(healed)}", file=sys.stderr)
            for line in healed["removed"]:
                print(f"  removed {line}", file=sys.stderr)
            result = healed
        else:
            source = _native.Provider.connect(_provider_config(args, "from_"))
            destination = _native.Provider.connect(_provider_config(args, "to_"))
            members = []
            for container in args.containers:
                options = MigrationOptions(container=container, keep_source=args.keep_source,
                                           verify=not args.no_verify, check_criu=not args.no_criu_check,
                                           method=args.method, memory=args.memory, compression=args.compression,
                                           ignore_host_checks=args.ignore_host_checks)
                if args.checkpoint_name:
                    options["checkpoint_name"] = args.checkpoint_name
                members.append(options)
            if len(members) == 1:
                report = _native.migrate(source, destination, members[0], _Progress())
                _print_stats(report)
                result = report
            else:
                group = _native.migrate_group(destination, [(source, m) for m in members], _Progress())
                _print_group(group)
                result = group
    except _native.MigrationFailedError as err:
        print(f"vimigrate: {err}", file=sys.stderr)
        return 2 if getattr(err, "kind", "") == "InvalidInput" else 1
    except _native.InvalidInputError as err:
        print(f"vimigrate: {err}", file=sys.stderr)
        return 2
    except _native.VimigrateError as err:
        print(f"vimigrate: {err}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0
