"""The ``m2m`` command line.

Each command is one small function over the public API, registered with the
:func:`command` decorator; to add a command, write ``def cmd_NAME(args) -> int`` and
an ``add_arguments`` function for its flags. Every command and flag has help text.

    m2m serve --path ./m2m_data --host 127.0.0.1 --port 8080 --grpc-port 9090
    m2m info --path ./m2m_data
    m2m openapi > docs/openapi.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from m2m.edge.export import add_export_edge_command
from m2m.errors import M2MError

Handler = Callable[[argparse.Namespace], int]


@dataclass
class Command:
    name: str
    help: str
    handler: Handler
    add_arguments: Callable[[argparse.ArgumentParser], None]


COMMANDS: list[Command] = []


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register ``handler`` as ``m2m NAME``."""

    def register(handler: Handler) -> Handler:
        COMMANDS.append(Command(name, help, handler, add_arguments))
        return handler

    return register


def _path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default="./m2m_data", help="data folder of the store (default: ./m2m_data)")


# -- serve --------------------------------------------------------------------------------------


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    _path_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind both servers to (default: 127.0.0.1, loopback only)",
    )
    parser.add_argument("--port", type=int, default=8080, help="REST port (default: 8080)")
    parser.add_argument("--grpc-port", type=int, default=9090, help="gRPC port (default: 9090)")
    parser.add_argument("--no-grpc", action="store_true", help="run the REST server only")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY:ROLE",
        help="an API key and its role (read, write or admin); repeat for more keys",
    )
    parser.add_argument(
        "--api-keys-file",
        metavar="FILE",
        help="file of API keys, one KEY:ROLE per line ('#' starts a comment)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest request body accepted, in bytes (default: 64 MiB); larger gets 413",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long SIGTERM waits for requests in flight (default: 30)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        metavar="N",
        help="BLAS threads per search (default 1: concurrent requests share the cores; 0 = library default)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request line")


@command("serve", "run the REST and gRPC servers over one store (SIGTERM stops gracefully)", _serve_arguments)
def cmd_serve(args: argparse.Namespace) -> int:
    from m2m.server.settings import DEFAULT_MAX_BODY_BYTES, ServerSettings, collect_api_keys

    keys = collect_api_keys(args.api_key, args.api_keys_file)
    settings = ServerSettings(
        path=args.path,
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        api_keys=keys,
        max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        shutdown_grace_s=args.shutdown_grace,
        blas_threads=args.blas_threads or None,
    )
    from m2m.server.serve import exposure_warning, serve

    warning = exposure_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    logging.getLogger(__name__).info(
        "serving %s: REST http://%s:%d, gRPC %s, %d API key(s)",
        settings.path,
        settings.host,
        settings.port,
        "off" if settings.grpc_port is None else f"{settings.host}:{settings.grpc_port}",
        len(keys),
    )
    return serve(settings, access_log=args.access_log)


# -- info ---------------------------------------------------------------------------------------


@command(
    "info", "list the collections of a store with their dimension, metric and item count", _path_argument
)
def cmd_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from m2m.client import Client

    if not Path(args.path).exists():
        print(f"error: no store at {args.path}", file=sys.stderr)
        return 1
    with Client(args.path) as client:
        names = client.list_collections()
        print(f"store {args.path}: {len(names)} collection(s)")
        for name in names:
            col = client.get_collection(name)
            print(f"  {name}\tdim={col.dim}\tmetric={col.metric.value}\tcount={col.count()}")
    return 0


# -- openapi ------------------------------------------------------------------------------------


@command("openapi", "print the REST API's OpenAPI spec as JSON (what docs/openapi.json holds)")
def cmd_openapi(args: argparse.Namespace) -> int:
    from m2m.server.rest import create_app

    print(json.dumps(create_app().openapi(), indent=2, sort_keys=True))
    return 0


# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from m2m import __version__

    parser = argparse.ArgumentParser(prog="m2m", description="M2M: a local-first vector search engine.")
    parser.add_argument("--version", action="version", version=f"m2m {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        cmd_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(cmd_parser)
        cmd_parser.set_defaults(handler=cmd.handler)
    add_export_edge_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return args.handler(args)
    except M2MError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
