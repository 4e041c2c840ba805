"""The ``vimigrate`` command line: the engine without Cloudify.

Output is JSON on stdout so scripts can read it; errors go to stderr with exit status 2 for bad
input and 1 for everything else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import _native


def _provider_config(args: argparse.Namespace, prefix: str = "") -> dict:
    get = lambda key: getattr(args, prefix + key)  # noqa: E731
    config: dict = {"name": get("name"), "docker_host": get("docker_host"), "timeout_secs": args.timeout}
    if get("tls_ca") or get("tls_cert") or get("tls_key"):
        config["tls"] = {"ca": get("tls_ca"), "cert": get("tls_cert"), "key": get("tls_key")}
    if get("allow_plain_tcp"):
        config["allow_plain_tcp"] = True
    for key in ("public_address", "transfer_address"):
        if get(key):
            config[key] = get(key)
    if get("transfer_port"):
        config["transfer_port"] = get("transfer_port")
    return config


def _add_provider_args(parser: argparse.ArgumentParser, prefix: str = "", default_name: str = "provider") -> None:
    flag = f"--{prefix.replace('_', '-')}" if prefix else "--"
    parser.add_argument(f"{flag}name", dest=f"{prefix}name", default=default_name, help="provider name used in messages")
    parser.add_argument(f"{flag}docker-host", dest=f"{prefix}docker_host", required=True,
                        help="unix:///path/docker.sock or tcp://HOST:PORT")
    parser.add_argument(f"{flag}tls-ca", dest=f"{prefix}tls_ca", help="CA certificate (PEM file) for tcp://")
    parser.add_argument(f"{flag}tls-cert", dest=f"{prefix}tls_cert", help="client certificate (PEM file) for tcp://")
    parser.add_argument(f"{flag}tls-key", dest=f"{prefix}tls_key", help="client key (PEM file) for tcp://")
    parser.add_argument(f"{flag}allow-plain-tcp", dest=f"{prefix}allow_plain_tcp", action="store_true",
                        help="allow tcp:// without TLS")
    parser.add_argument(f"{flag}public-address", dest=f"{prefix}public_address",
                        help="address where the provider's published ports answer")
    parser.add_argument(f"{flag}transfer-address", dest=f"{prefix}transfer_address",
                        help="address the other host reaches this host's vimigrate-runtime at (default: public address)")
    parser.add_argument(f"{flag}transfer-port", dest=f"{prefix}transfer_port", type=int, default=0,
                        help="port this host's vimigrate-runtime receives on (default: any free port)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimigrate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the engine version")
    sub.add_parser("self-check", help="check the native module and its runtime")
    probe = sub.add_parser("probe", help="report a provider's versions and capabilities")
    _add_provider_args(probe)
    probe.add_argument("--timeout", type=int, default=120, help="seconds per API call")
    migrate = sub.add_parser("migrate", help="live-migrate one running container to another provider")
    migrate.add_argument("container", help="name or id of the running container on the source")
    _add_provider_args(migrate, "from_", "source")
    _add_provider_args(migrate, "to_", "destination")
    migrate.add_argument("--keep-source", action="store_true", help="keep the stopped source container")
    migrate.add_argument("--no-verify", action="store_true", help="skip reading the checkpoint back before restoring")
    migrate.add_argument("--no-criu-check", action="store_true", help="skip the CRIU probe on both hosts")
    migrate.add_argument("--checkpoint-name", help="checkpoint name (default vimigrate-<time>)")
    migrate.add_argument("--method", choices=["auto", "direct", "docker"], default="auto",
                         help="direct: host to host through vimigrate-runtime; docker: Docker's checkpoint API; "
                              "auto (default): direct when both hosts offer it")
    migrate.add_argument("--timeout", type=int, default=120, help="seconds per API call")
    heal = sub.add_parser("heal", help="after a migration that did not finish: make a container run on exactly "
                                       "one of two providers again and remove what the migration left")
    heal.add_argument("container", help="name of the container")
    _add_provider_args(heal, "from_", "source")
    _add_provider_args(heal, "to_", "destination")
    heal.add_argument("--timeout", type=int, default=120, help="seconds per API call")
    return parser


class _Progress:
    """Prints phases and bytes moved to stderr; rewrites one line per phase on a terminal."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_print = 0.0

    def __call__(self, event: dict) -> None:
        if event["event"] == "phase":
            if self.tty:
                self.stream.write("\n")
            self.stream.write(f"{event['phase']}...")
            self.stream.write("\n" if not self.tty else "")
        else:
            now = time.monotonic()
            if self.tty and now - self.last_print > 0.1:
                self.stream.write(f"\r{event['phase']}... {event['bytes'] / 1e6:.1f} MB")
                self.last_print = now
        self.stream.flush()


def _print_stats(report: dict) -> None:
    stats = report["stats"]
    print(f"migrated {report['container']} from {report['source']} to {report['destination']} "
          f"({report['destination_id'][:12]})", file=sys.stderr)
    print(f"  {'method':<18} {report['method']}" + (f" ({report['method_reason']})" if report.get("method_reason") else ""),
          file=sys.stderr)
    rows = [(k, v) for k, v in stats.items() if not k.startswith("criu_")]
    for key, value in rows:
        print(f"  {key:<18} {value}", file=sys.stderr)
    for group in ("criu_dump", "criu_restore"):
        for key, value in (stats.get(group) or {}).items():
            print(f"  {group.replace('_', '.')}.{key:<13} {value}", file=sys.stderr)
    for warning in report["warnings"]:
        print(f"  warning: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "version":
            result: object = _native.version()
        elif args.command == "self-check":
            result = _native.self_check()
        elif args.command == "probe":
            result = _native.Provider.connect(_provider_config(args)).probe()
        elif args.command == "heal":
            providers = [_native.Provider.connect(_provider_config(args, p)) for p in ("from_", "to_")]
            result = _native.heal(providers, args.container)
            print(f"{args.container} runs on {result['runs_on']}" + (" (restored from its checkpoint)" if result["resumed"] else ""),
                  file=sys.stderr)
            for line in result["removed"]:
                print(f"  removed {line}", file=sys.stderr)
        else:
            source = _native.Provider.connect(_provider_config(args, "from_"))
            destination = _native.Provider.connect(_provider_config(args, "to_"))
            options = {"container": args.container, "keep_source": args.keep_source,
                       "verify": not args.no_verify, "check_criu": not args.no_criu_check, "method": args.method}
            if args.checkpoint_name:
                options["checkpoint_name"] = args.checkpoint_name
            result = _native.migrate(source, destination, options, _Progress())
            _print_stats(result)
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
