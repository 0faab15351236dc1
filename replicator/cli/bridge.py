"""`replicator bridge`: registry webhooks (HTTP) -> MQTT events."""

from __future__ import annotations

import argparse
from typing import Any

from replicator.errors import UsageError


def register(subparsers: Any) -> None:
    """Add `bridge [--listen ADDR] [--config FILE]`."""
    parser = subparsers.add_parser(
        "bridge",
        help="receive registry webhooks and publish them on the MQTT bus",
        description="Serve POST /events/<source-name> for registry notifications and publish "
        "each envelope at QoS 1 on registry/<source-name>/events, answering 200 only after the "
        "broker acknowledged (503 while it is unreachable, so the registry retries). SIGHUP "
        "re-reads the config: registry names and token apply at once, [mqtt] and the listen "
        "address at the next restart.",
    )
    parser.add_argument(
        "--listen", metavar="HOST:PORT",
        help="address to listen on (default: [bridge] listen, 127.0.0.1:9479)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle `replicator bridge`: serve until SIGTERM or SIGINT (SIGHUP reloads the config),
    then exit 0."""
    import asyncio

    from replicator.config.loading import load_config
    from replicator.daemon.bridge import serve

    listen: str | None = args.listen
    if listen is not None:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise UsageError(f"--listen {listen!r} is not HOST:PORT")
    config = load_config(args.config)
    asyncio.run(serve(config, listen=listen))
    return 0
