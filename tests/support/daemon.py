"""`replicator run` and `replicator bridge` as real subprocesses, for end-to-end tests and benches.

`write_config()` writes a daemon config TOML (plus the replication and policy JSON files it
names) for given registries, broker and journal. `DaemonProcess` starts `replicator run` with
`--log-level info`, appends its JSON log lines to a file, waits for `/readyz`, and sends it
SIGTERM / SIGHUP / SIGKILL; `BridgeProcess` does the same for `replicator bridge`. `replicator_cli`
runs one-shot commands (`status --json`, `jobs --json`) against the same config.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import paho.mqtt.publish as mqtt_publish

from replicator.domain.fleet.leases import Lease
from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.domain.jobs import TERMINAL_STATES
from replicator.journal import EventRow, JobRow
from replicator.journal.claimers import open_journal
from tests.support.layout_push import push_over_http
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port, wait_listening
from tests.support.registry_server import Registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Python start-up, imports and the first CONNACK take about a second; 30 s covers a loaded
# 2-core CI machine running registries and brokers beside it.
READY_TIMEOUT_SECONDS = 30.0
# SIGTERM drains in-flight copies within the configured grace period (a few seconds in tests).
STOP_TIMEOUT_SECONDS = 30.0
# One-shot CLI commands read the journal and exit: a second normally.
CLI_TIMEOUT_SECONDS = 60.0
HTTP_OK = 200
# Polling interval of the wait helpers: short next to the latencies being waited for.
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class RegistrySpec:
    """One `[registries.<name>]` entry: where it is, and its rules and policy documents."""

    name: str
    account: str
    region: str
    url: str
    replication: Mapping[str, Any] | None = None
    policy: Mapping[str, Any] | None = None
    # More keys of the section (username, password_file, max_bandwidth...), written as JSON
    # values (which TOML reads the same for strings and numbers).
    extra: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True)
class DaemonSettings:
    """Everything of a config besides the registries."""

    broker_port: int
    journal_url: str
    client_id: str
    shared_group: str = ""
    http_port: int = field(default_factory=free_port)
    bridge_port: int = field(default_factory=free_port)
    concurrency: int = 8
    per_registry: int = 8
    max_attempts: int = 5
    grace_period: float = 10.0
    # [workers] transfer floor: None leaves the daemon's default.
    transfer_floor_rate: int | None = None
    transfer_floor_window: float | None = None


def rule(destinations: Sequence[tuple[str, str]], prefixes: Sequence[str] = ()) -> dict[str, Any]:
    """A replication rule to (region, account) destinations for repositories under `prefixes`."""
    body: dict[str, Any] = {
        "destinations": [{"region": r, "registryId": a} for r, a in destinations]
    }
    if prefixes:
        body["repositoryFilters"] = [{"filter": p, "filterType": "PREFIX_MATCH"} for p in prefixes]
    return body


def allow_policy(source_account: str, region: str, account: str, repository: str) -> dict[str, Any]:
    """A registry policy letting `source_account` replicate into `repository` (a pattern)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReplicationFromSource",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{source_account}:root"},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": f"arn:aws:ecr:{region}:{account}:repository/{repository}",
            }
        ],
    }


def write_config(
    folder: Path,
    registries: Sequence[RegistrySpec],
    settings: DaemonSettings,
    *,
    name: str = "replicator.toml",
) -> Path:
    """Write the config (and its JSON documents beside it) into `folder`; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "version = 1",
        "[journal]",
        f'url = "{settings.journal_url}"',
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {settings.broker_port}",
        f'client_id = "{settings.client_id}"',
        f'shared_group = "{settings.shared_group}"',
        "[workers]",
        f"concurrency = {settings.concurrency}",
        f"per_registry = {settings.per_registry}",
        f"max_attempts = {settings.max_attempts}",
        f"grace_period = {settings.grace_period}",
        *(
            f"{key} = {value}"
            for key, value in (
                ("transfer_floor_rate", settings.transfer_floor_rate),
                ("transfer_floor_window", settings.transfer_floor_window),
            )
            if value is not None
        ),
        "[http]",
        f'listen = "127.0.0.1:{settings.http_port}"',
        "[bridge]",
        f'listen = "127.0.0.1:{settings.bridge_port}"',
    ]
    stem = name.removesuffix(".toml")
    for spec in registries:
        lines += [
            f"[registries.{spec.name}]",
            f'account = "{spec.account}"',
            f'region = "{spec.region}"',
            f'url = "{spec.url}"',
            *(f"{key} = {json.dumps(value)}" for key, value in spec.extra.items()),
        ]
        for key, document in (("replication", spec.replication), ("policy", spec.policy)):
            if document is not None:
                file = folder / f"{stem}-{spec.name}-{key}.json"
                file.write_text(json.dumps(document, indent=2))
                lines.append(f'{key} = "{file.name}"')
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def replicator_command(*args: str) -> list[str]:
    """The command line of `replicator ARGS` run by this interpreter."""
    return [sys.executable, "-m", "replicator", *args]


def replicator_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a one-shot `replicator` command with `--config`; its completed process."""
    command, *rest = args
    return subprocess.run(
        replicator_command(command, *rest, "--config", str(config)),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
    )


def cli_json(config: Path, *args: str) -> Any:
    """The JSON a `replicator ... --json` command printed (exit 0 or 1 both print it)."""
    result = replicator_cli(config, *args, "--json")
    assert result.returncode in (0, 1), f"replicator {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


def manifest_digest(registry_url: str, repository: str, reference: str) -> str | None:
    """The digest the registry serves for a manifest (HEAD, every type accepted), or None."""
    response = httpx.head(
        f"{registry_url}/v2/{repository}/manifests/{reference}",
        headers={"accept": MANIFEST_ACCEPT},
        timeout=10.0,
    )
    if response.status_code != HTTP_OK:
        return None
    digest: str | None = response.headers.get("docker-content-digest")
    return digest


def manifest_present(registry_url: str, repository: str, reference: str) -> bool:
    """Whether the registry serves the manifest."""
    return manifest_digest(registry_url, repository, reference) is not None


def push_images(layout: Path, registry_url: str, images: Sequence[tuple[str, str]]) -> None:
    """Push tags of `layout` as (repository, tag) over HTTP, one after the other (each push
    makes the registry notify, as skopeo's would; this is only faster to start)."""
    for repository, tag in images:
        push_over_http(layout, tag, registry_url, repository)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class _Process:
    """A `replicator` subprocess whose stderr (JSON logs) is appended to `log_path`."""

    def __init__(
        self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.command = command
        self.log_path = log_path
        # Variables set for the process beyond ours ($NOTIFY_SOCKET, $WATCHDOG_USEC...).
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id of the running process."""
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                env=env,
            )

    def send(self, signum: signal.Signals) -> None:
        """Send a signal to the process."""
        assert self.process is not None, "not started"
        self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.process is not None, "not started"
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained or flushed."""
        if self.running:
            self.send(signal.SIGKILL)
            self.wait()

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL when it hangs); the exit code, None if it was not running."""
        if not self.running:
            return None
        self.send(signal.SIGTERM)
        try:
            return self.wait()
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (other lines are skipped)."""
        if not self.log_path.exists():
            return []
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines whose `event` is `name`."""
        return [line for line in self.logs() if line.get("event") == name]

    def wait_log(self, name: str, *, timeout: float = READY_TIMEOUT_SECONDS) -> dict[str, Any]:
        """Wait for a log line with `event` == name; the first one."""
        wait_for(lambda: bool(self.events(name)), timeout=timeout, what=f"log event {name}")
        return self.events(name)[0]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class DaemonProcess(_Process):
    """`replicator --log-level info run --config FILE`, with its API on `http_port`."""

    def __init__(
        self,
        config: Path,
        http_port: int,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            replicator_command("--log-level", "info", "run", "--config", str(config)),
            log_path or config.with_suffix(".daemon.log"),
            env,
        )
        self.config = config
        self.api = f"http://127.0.0.1:{http_port}"

    def start(self, *, ready: bool = True) -> DaemonProcess:
        """Start the daemon; with `ready`, wait until /readyz answers 200."""
        self._spawn()
        if ready:
            self.wait_ready()
        return self

    def get(self, path: str, **params: str) -> httpx.Response:
        """GET a path of the daemon's API."""
        return httpx.get(f"{self.api}{path}", params=params, timeout=10.0)

    def readyz(self) -> int:
        """The status code of /readyz (0 when nothing answers)."""
        try:
            return self.get("/readyz").status_code
        except httpx.TransportError:
            return 0

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until /readyz answers 200; fail with the log tail if the process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise AssertionError(f"the daemon exited at start:\n{self.log_tail()}")
            if self.readyz() == 200:
                return
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"the daemon was not ready after {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        """The /metrics exposition text."""
        response = self.get("/metrics")
        response.raise_for_status()
        return response.text


class BridgeProcess(_Process):
    """`replicator --log-level info bridge --config FILE` on the config's `[bridge] listen`."""

    def __init__(self, config: Path, port: int, log_path: Path | None = None) -> None:
        super().__init__(
            replicator_command("--log-level", "info", "bridge", "--config", str(config)),
            log_path or config.with_suffix(".bridge.log"),
        )
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def events_url(self, source: str) -> str:
        """Where a registry's notifications endpoint points for source `source`."""
        return f"{self.url}/events/{source}"

    def start(self, *, ready: bool = True) -> BridgeProcess:
        """Start the bridge; with `ready`, wait until it listens."""
        self._spawn()
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        """Wait until the bridge listens."""
        wait_listening(self.port, timeout=READY_TIMEOUT_SECONDS)


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = {
            pair.split("=", 1)[0]: pair.split("=", 1)[1].strip('"')
            for pair in label_text.rstrip("}").split(",")
            if "=" in pair
        }
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


# The topology: a source, a same-account destination in another region, and another
# account whose policy admits only repository/prod/* from the source's account.
SOURCE_ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
USE1, USW2, EUW1 = "use1", "usw2", "euw1"
REGIONS = {USE1: "us-east-1", USW2: "us-west-2", EUW1: "eu-west-1"}
ACCOUNTS = {USE1: SOURCE_ACCOUNT, USW2: SOURCE_ACCOUNT, EUW1: OTHER_ACCOUNT}
DESTINATIONS = (USW2, EUW1)
# Repositories under these prefixes are replicated from use1 (euw1 admits only prod/).
REPLICATED_PREFIXES = ("prod", "dev")


def topology(
    urls: Mapping[str, str],
    *,
    prefixes: Sequence[str] = REPLICATED_PREFIXES,
    extra: Mapping[str, Mapping[str, str | int]] | None = None,
) -> list[RegistrySpec]:
    """use1 -> usw2 + euw1 for `prefixes`; euw1's policy admits prod/* from use1's account;
    `extra[name]`: more keys of that registry's section."""
    destinations = [(REGIONS[name], ACCOUNTS[name]) for name in DESTINATIONS]
    more = extra or {}
    return [
        RegistrySpec(
            USE1, SOURCE_ACCOUNT, REGIONS[USE1], urls[USE1],
            replication={"rules": [rule(destinations, prefixes)]}, extra=more.get(USE1, {}),
        ),
        RegistrySpec(USW2, SOURCE_ACCOUNT, REGIONS[USW2], urls[USW2], extra=more.get(USW2, {})),
        RegistrySpec(
            EUW1, OTHER_ACCOUNT, REGIONS[EUW1], urls[EUW1],
            policy=allow_policy(SOURCE_ACCOUNT, REGIONS[EUW1], OTHER_ACCOUNT, "prod/*"),
            extra=more.get(EUW1, {}),
        ),
    ]  # fmt: skip


@dataclass
class Stack:
    """Registries, broker, bridge and daemon of one end-to-end scenario."""

    folder: Path
    broker: Mosquitto
    registries: dict[str, Registry]
    settings: DaemonSettings
    config: Path
    bridge: BridgeProcess
    daemon: DaemonProcess

    @property
    def source(self) -> Registry:
        """The source registry use1."""
        return self.registries[USE1]

    def new_daemon(self, log_name: str) -> DaemonProcess:
        """Another daemon process on the same config (not started), logging to its own file."""
        return DaemonProcess(self.config, self.settings.http_port, self.folder / log_name)

    def stop(self) -> None:
        """Stop the daemon and the bridge (registries and broker belong to their fixtures)."""
        self.daemon.stop()
        self.bridge.stop()


def _own_url(registry: Registry) -> str:
    return registry.url


def start_stack(
    folder: Path,
    broker: Mosquitto,
    start_registry: Callable[[str | None], Registry],
    *,
    notifications: bool = True,
    start_daemon: bool = True,
    front: Mapping[str, Callable[[Registry], str]] | None = None,
    extra: Mapping[str, Mapping[str, str | int]] | None = None,
    **settings: Any,
) -> Stack:
    """Start use1 (its notifications to the bridge), usw2, euw1, the bridge and the daemon.

    `start_registry(notifications_url)` starts one registry; `front[name](registry)` gives the
    URL the config names for it (a fault proxy's, say); `extra[name]` adds keys to its section;
    `settings` override DaemonSettings.
    """
    folder.mkdir(parents=True, exist_ok=True)
    options = DaemonSettings(
        broker_port=broker.port,
        journal_url=settings.pop("journal_url", f"sqlite:///{folder / 'journal.db'}"),
        client_id=settings.pop("client_id", f"replicator-{folder.name}"),
        **settings,
    )
    bridge_url = f"http://127.0.0.1:{options.bridge_port}/events/{USE1}"
    registries = {
        USE1: start_registry(bridge_url if notifications else None),
        USW2: start_registry(None),
        EUW1: start_registry(None),
    }
    urls = {n: (front or {}).get(n, _own_url)(r) for n, r in registries.items()}
    config = write_config(folder, topology(urls, extra=extra), options)
    # The bridge and the daemon start side by side: each is a Python start-up of a second or so.
    bridge = BridgeProcess(config, options.bridge_port).start(ready=False)
    daemon = DaemonProcess(config, options.http_port)
    if start_daemon:
        daemon.start(ready=False)
    try:
        bridge.wait_ready()
        if start_daemon:
            daemon.wait_ready()
    except BaseException:
        daemon.kill()
        bridge.kill()
        raise
    return Stack(folder, broker, registries, options, config, bridge, daemon)


def envelope(
    repository: str,
    digest: str,
    *,
    tag: str | None = None,
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    action: str = "push",
    references: Sequence[dict[str, Any]] = (),
) -> bytes:
    """A distribution notification envelope with one event, as docker-registry sends it."""
    target: dict[str, Any] = {
        "mediaType": media_type,
        "digest": digest,
        "size": 1024,
        "repository": repository,
    }
    if tag is not None:
        target["tag"] = tag
    if references:
        target["references"] = list(references)
    event = {
        "id": f"test-event-{next(_event_ids)}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "target": target,
        "request": {"id": "r", "addr": "127.0.0.1", "host": "127.0.0.1", "method": "PUT"},
        "source": {"addr": "127.0.0.1:5000"},
    }
    return json.dumps({"events": [event]}).encode()


_event_ids = itertools.count()


def publish(port: int, topic: str, payload: bytes) -> None:
    """Publish one message at QoS 1 on the broker at 127.0.0.1:port (returns after the PUBACK)."""
    mqtt_publish.single(
        topic,
        payload,
        qos=1,
        hostname="127.0.0.1",
        port=port,
        client_id=f"test-publisher-{os.getpid()}-{next(_event_ids)}",
        protocol=paho.MQTTv5,
    )


class JournalReader:
    """Synchronous reads of a journal the daemon writes (each call opens it briefly)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _jobs(self, limit: int) -> list[JobRow]:
        async with await open_journal(self.url) as journal:
            return await journal.jobs(limit=limit)

    async def _events(self, limit: int) -> list[EventRow]:
        async with await open_journal(self.url) as journal:
            return await journal.events(limit=limit)

    async def _lease(self, name: str) -> Lease | None:
        async with await open_journal(self.url) as journal:
            return await journal.lease(name)

    def jobs(self, limit: int = 100_000) -> list[JobRow]:
        """Every job, the newest first."""
        return asyncio.run(self._jobs(limit))

    def lease(self, name: str) -> Lease | None:
        """A fleet's lease `name` as stored (None: never held)."""
        return asyncio.run(self._lease(name))

    def events(self, limit: int = 100_000) -> list[EventRow]:
        """Every recorded event, the newest first."""
        return asyncio.run(self._events(limit))

    def wait_finished(self, count: int, *, timeout: float) -> list[JobRow]:
        """Wait until at least `count` jobs exist and none is unfinished; the jobs."""
        rows: list[JobRow] = []

        def done() -> bool:
            nonlocal rows
            rows = self.jobs()
            finished = TERMINAL_STATES
            return len(rows) >= count and all(row.state in finished for row in rows)

        try:
            wait_for(done, timeout=timeout, what=f"{count} finished jobs")
        except AssertionError as exc:
            states = sorted(f"{r.repository}:{r.tag}->{r.destination} {r.state}" for r in rows)
            raise AssertionError(f"{exc}; {len(rows)} jobs: {states[:20]}") from None
        return rows
