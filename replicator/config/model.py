"""The shape of the daemon configuration (ARCHITECTURE.md §4): the whole file and its smaller
sections (journal, mqtt, workers, http, reconcile); [registries] and [bridge] have their own
modules (registries.py, bridge.py).

`replicator.config.loading` loads a file into these models; import them from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, PrivateAttr, SecretStr, ValidationInfo

from replicator.config.bridge import BridgeConfig
from replicator.config.fields import ConfigPath, Listen, Listener, Port, RegistryName, Section
from replicator.config.registries import RegistryConfig
from replicator.domain.routing.rules import Destination
from replicator.domain.transfers.pace import DEFAULT_FLOOR_RATE, DEFAULT_FLOOR_WINDOW, Floor
from replicator.registry.blobs import DEFAULT_CHUNK_THRESHOLD, DEFAULT_CONCURRENCY
from replicator.registry.settings import DEFAULT_MAX_IN_FLIGHT

SUPPORTED_VERSION = 1
ENV_VAR = "REPLICATOR_CONFIG"
DEFAULT_PATH = Path("/etc/replicator/replicator.toml")
DEFAULT_JOURNAL_URL = "sqlite:////var/lib/replicator/journal.db"
# Events and finished jobs are kept this long: a month of history for `status` and `jobs`, far
# longer than any redelivery, while the journal stays flat in size.
DEFAULT_RETENTION_DAYS = 30.0
# A job in flight at this many process deaths in a row is set aside (PROCESS_DIED): twice the
# attempts a job's own failures get, since most deaths have another cause; a job that kills the
# process still stops a crash loop after a few minutes of restarts.
DEFAULT_MAX_DEATHS = 20
MIB = 1024 * 1024
# Below 5 MiB, S3-backed registries refuse non-final chunks (S3's multipart minimum).
MIN_CHUNK_THRESHOLD = 5 * MIB
# A job claimed longer ago than this by a process of another host is taken for an orphan of a
# dead peer: far beyond the copy of any real image on a LAN, short enough to repair within
# minutes. (A dead process of this host is known dead at once: journal/claimers.py.)
DEFAULT_ORPHAN_AFTER = 600.0
# Below a second even a live peer's smallest copy would be taken from it and run twice.
MIN_ORPHAN_AFTER = 1.0
# Reconcile, the backstop of the bus, scans every this many seconds unless told otherwise: it
# bounds what a broker that lost its store (or a sender that gave up) can lose to 15 minutes,
# while a scan costs about the registries' floor for listing what they hold (README, speed).
DEFAULT_RECONCILE_INTERVAL = 900.0
_SQLITE_PREFIX = "sqlite:///"


def _resolve_journal_url(url: str, info: ValidationInfo) -> str:
    if "://" not in url:
        raise ValueError(f"{url!r} is not a database URL (like sqlite:////var/lib/x.db)")
    path = url.removeprefix(_SQLITE_PREFIX)
    if not url.startswith(_SQLITE_PREFIX) or path.startswith("/") or path in ("", ":memory:"):
        return url
    base = Path((info.context or {}).get("base_dir", "."))
    return f"{_SQLITE_PREFIX}{base / path}"


def _check_topic_level(value: str) -> str:
    if any(ch in value for ch in "/+#"):
        raise ValueError(f"{value!r} must not contain '/', '+' or '#'")
    return value


def _check_events_topic(value: str) -> str:
    """One '+' level, where each source's name goes (the bridge publishes `registry/use1/events`
    for `registry/+/events`; the daemon reads the source from that level), and no '#'."""
    levels = value.split("/")
    if (
        levels.count("+") != 1
        or "#" in value
        or any("+" in level for level in levels if level != "+")
    ):
        raise ValueError(
            f"{value!r} needs exactly one '+' level (and no '#'), where each source registry's "
            'name goes: e.g. "registry/+/events"'
        )
    return value


class JournalConfig(Section):
    """[journal]: any SQLAlchemy URL (a relative SQLite path is relative to the config file),
    and how many days events and finished jobs are kept (0: for ever)."""

    url: Annotated[str, AfterValidator(_resolve_journal_url)] = DEFAULT_JOURNAL_URL
    retention_days: Annotated[float, Field(ge=0)] = DEFAULT_RETENTION_DAYS


class MqttConfig(Section):
    """[mqtt]: the broker, topics, and credentials (password only from a file)."""

    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: Annotated[str, Field(min_length=1)] = "replicator-1"
    events_topic: Annotated[str, AfterValidator(_check_events_topic)] = "registry/+/events"
    results_topic: str = "replicator/{registry}/replications"
    shared_group: Annotated[str, AfterValidator(_check_topic_level)] = ""
    username: str | None = None
    password_file: ConfigPath | None = None
    tls: bool = False
    ca_file: ConfigPath | None = None
    client_cert: ConfigPath | None = None
    client_key: ConfigPath | None = None
    keepalive: Annotated[int, Field(ge=0)] = 30
    _password: SecretStr | None = PrivateAttr(default=None)

    @property
    def password(self) -> SecretStr | None:
        """The broker password read from `password_file`."""
        return self._password


class WorkersConfig(Section):
    """[workers]: concurrency limits, attempts, shutdown grace, the chunked-upload threshold and
    the age at which a job claimed by a process of another host is taken for an orphan."""

    concurrency: Annotated[int, Field(ge=1)] = DEFAULT_CONCURRENCY
    per_registry: Annotated[int, Field(ge=1)] = DEFAULT_MAX_IN_FLIGHT
    max_attempts: Annotated[int, Field(ge=1)] = 10
    max_deaths: Annotated[int, Field(ge=1)] = DEFAULT_MAX_DEATHS
    grace_period: Annotated[float, Field(ge=0)] = 30.0
    chunk_threshold: Annotated[int, Field(ge=MIN_CHUNK_THRESHOLD)] = DEFAULT_CHUNK_THRESHOLD
    orphan_after: Annotated[float, Field(ge=MIN_ORPHAN_AFTER)] = DEFAULT_ORPHAN_AFTER
    # A source blob read bringing less than this rate over the window is cut and retried.
    transfer_floor_rate: Annotated[int, Field(ge=1)] = DEFAULT_FLOOR_RATE
    transfer_floor_window: Annotated[float, Field(gt=0)] = DEFAULT_FLOOR_WINDOW

    @property
    def transfer_floor(self) -> Floor:
        """The floor a source blob read must keep (domain/transfers/pace.py)."""
        return Floor(self.transfer_floor_rate, self.transfer_floor_window)


class HttpConfig(Listener):
    """[http]: where /healthz, /readyz, /metrics and the status API listen."""

    listen: Listen = "127.0.0.1:9478"


class ReconcileConfig(Section):
    """[reconcile]: seconds between drift reconciliations; 0 turns it off."""

    interval: Annotated[float, Field(ge=0)] = DEFAULT_RECONCILE_INTERVAL


class Config(Section):
    """The whole file; `load_config` fills in what is read from the files it names."""

    version: int = SUPPORTED_VERSION
    journal: JournalConfig = Field(default_factory=JournalConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    registries: dict[RegistryName, RegistryConfig] = Field(min_length=1)
    _path: Path = PrivateAttr(default=DEFAULT_PATH)

    @property
    def path(self) -> Path:
        """The file this configuration was loaded from."""
        return self._path

    def registry_by_location(self, account: str, region: str) -> RegistryConfig | None:
        """The registry with this account and region, if configured."""
        for registry in self.registries.values():
            if registry.account == account and registry.region == region:
                return registry
        return None

    def registry_by_destination(self, destination: Destination) -> RegistryConfig | None:
        """The registry a replication rule's destination names, if configured."""
        return self.registry_by_location(destination.registry_id, destination.region)

    def registry_by_host(self, host: str) -> RegistryConfig | None:
        """The registry serving `host[:port]` (default ports optional), if configured."""
        wanted = host.lower()
        for registry in self.registries.values():
            if wanted in (registry.host, f"{registry.host}:443", f"{registry.host}:80"):
                return registry
        return None
