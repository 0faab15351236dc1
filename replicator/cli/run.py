"""`replicator run`: the daemon."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `run` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="run the replication daemon (MQTT events -> journal -> copies)",
        description="Consume registry events from MQTT and replicate images to the destinations "
        "the rules and policies allow. SIGTERM drains, SIGHUP reloads the config.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handle `replicator run`."""
    from replicator.daemon.service import daemon_main

    return daemon_main(args.config)
