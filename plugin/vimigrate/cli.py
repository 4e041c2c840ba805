"""The ``vimigrate`` command line: the engine without Cloudify.

Output is JSON on stdout so scripts can read it; errors go to stderr with exit status 2 for bad
input and 1 for everything else.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import _native


def _provider_config(args: argparse.Namespace) -> dict:
    config: dict = {"name": args.name, "docker_host": args.docker_host, "timeout_secs": args.timeout}
    if args.tls_ca or args.tls_cert or args.tls_key:
        config["tls"] = {"ca": args.tls_ca, "cert": args.tls_cert, "key": args.tls_key}
    if args.allow_plain_tcp:
        config["allow_plain_tcp"] = True
    return config


def _add_provider_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="provider", help="provider name used in messages")
    parser.add_argument("--docker-host", required=True, help="unix:///path/docker.sock or tcp://HOST:PORT")
    parser.add_argument("--tls-ca", help="CA certificate (PEM file) for tcp://")
    parser.add_argument("--tls-cert", help="client certificate (PEM file) for tcp://")
    parser.add_argument("--tls-key", help="client key (PEM file) for tcp://")
    parser.add_argument("--allow-plain-tcp", action="store_true", help="allow tcp:// without TLS")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per API call")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vimigrate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the engine version")
    sub.add_parser("self-check", help="check the native module and its runtime")
    probe = sub.add_parser("probe", help="report a provider's versions and capabilities")
    _add_provider_args(probe)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "version":
            result: object = _native.version()
        elif args.command == "self-check":
            result = _native.self_check()
        else:
            result = _native.Provider.connect(_provider_config(args)).probe()
    except _native.InvalidInputError as err:
        print(f"vimigrate: {err}", file=sys.stderr)
        return 2
    except _native.VimigrateError as err:
        print(f"vimigrate: {err}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0
