"""The commonest daemon config of the end-to-end tests: one source (`src`, us-east-1)
replicated to one destination (`dst`, us-west-2) of the same account, the journal a SQLite file
in the test's folder. `one_way_config` writes it; what differs between tests (the destination's
credentials, the workers' settings) are its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonSettings, RegistrySpec, rule, write_config

ACCOUNT = "111122223333"
SOURCE, DESTINATION = "src", "dst"
SOURCE_REGION, DESTINATION_REGION = "us-east-1", "us-west-2"


def sqlite_settings(folder: Path, broker_port: int, **settings: Any) -> DaemonSettings:
    """Daemon settings with a SQLite journal in `folder` and a client id of its own; `settings`
    are DaemonSettings fields (per_registry, max_attempts, grace_period...)."""
    return DaemonSettings(
        broker_port=broker_port,
        journal_url=f"sqlite:///{folder / 'journal.db'}",
        client_id=settings.pop("client_id", f"replicator-{folder.name}"),
        **settings,
    )


def one_way_config(
    folder: Path,
    settings: DaemonSettings,
    source_url: str,
    destination_url: str,
    *,
    account: str = ACCOUNT,
    destination_account: str | None = None,
    policy: dict[str, Any] | None = None,
    destination_extra: Mapping[str, str | int] | None = None,
) -> Path:
    """Write the config replicating `src` at `source_url` to `dst` at `destination_url` (of
    `destination_account`, `account` by default; with its registry `policy`, and
    `destination_extra` keys: username, password_file...) into `folder`; its path."""
    other = destination_account or account
    specs = [
        RegistrySpec(
            SOURCE, account, SOURCE_REGION, source_url,
            replication={"rules": [rule([(DESTINATION_REGION, other)])]},
        ),
        RegistrySpec(
            DESTINATION, other, DESTINATION_REGION, destination_url, policy=policy,
            extra=dict(destination_extra or {}),
        ),
    ]  # fmt: skip
    return write_config(folder, specs, settings)
