"""Security: TLS verification and client certificates, secrets kept out of every output, the API
on loopback by default, and policy denials that never reach the destination.

The bridge's 401 without its token is tested in test_bridge.py (test_without_token_is_401).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from replicator.config.loading import BridgeConfig, HttpConfig, load_config
from replicator.daemon.bus import Bus, BusOptions
from replicator.engine.copier import Copier
from replicator.engine.endpoint import Endpoint
from replicator.errors import BusError
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.copy_cli import run_copy
from tests.support.daemon import (
    EUW1,
    USW2,
    BridgeProcess,
    DaemonProcess,
    DaemonSettings,
    JournalReader,
    RegistrySpec,
    envelope,
    manifest_digest,
    publish,
    replicator_cli,
    rule,
    start_stack,
    wait_for,
    write_config,
)
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.mqtt_fixtures import Mosquitto, MosquittoFactory
from tests.support.ports import free_port
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.tls import Pki, SecuredMosquitto, TlsRegistry, loopback_alias, make_pki

pytestmark = pytest.mark.integration

KIB = 1024
ACCOUNT = "111122223333"
# Jobs of a few KiB finish in well under a second; the margin covers a loaded 2-core machine.
FINISHED_WITHIN_SECONDS = 60.0
# The API's default port (replicator.config.loading.HttpConfig).
DEFAULT_API_PORT = 9478


def add_lines(config: Path, section: str, lines: list[str]) -> None:
    """Insert `lines` right after the `[section]` header of a TOML config."""
    header = f"[{section}]\n"
    text = config.read_text()
    assert header in text, f"{config} has no {header!r}"
    config.write_text(text.replace(header, header + "\n".join(lines) + "\n", 1))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One throw-away CA with server and client certificates for this module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuiltImage]:
    """A small image (tag v1) in an OCI layout."""
    layout = OCILayout(tmp_path_factory.mktemp("security-layout"))
    return layout.path, layout.image("v1", [LayerSpec(71, 8 * KIB)], label="security")


@dataclass
class TlsRegistries:
    """A plain source holding app:v1, and two HTTPS registries holding it too (one of them
    requiring a client certificate)."""

    plain: Registry
    tls: TlsRegistry
    mtls: TlsRegistry
    digest: str


async def _seed(plain: Registry, target: TlsRegistry, repository: str = "app") -> None:
    """Copy app:v1 from `plain` to `repository`:v1 of `target` (CA and client certificate)."""
    async with ClientPool() as pool:
        source = pool.client(RegistrySettings(host=plain.host))
        destination = pool.client(
            RegistrySettings(
                host=target.host,
                scheme="https",
                verify=str(target.pki.ca_file),
                cert=(str(target.pki.client_cert), str(target.pki.client_key)),
            )
        )
        await Copier().copy_image(
            Endpoint(source, "app"), "v1", Endpoint(destination, repository), tag="v1"
        )


@pytest.fixture(scope="module")
def tls_registries(
    pki: Pki, registry_factory: RegistryFactory, image: tuple[Path, BuiltImage]
) -> Iterator[TlsRegistries]:
    """Plain, HTTPS and mTLS registries, each holding app:v1."""
    layout, built = image
    plain = registry_factory()
    push_over_http(layout, "v1", plain.url, "app")
    tls, mtls = TlsRegistry(pki), TlsRegistry(pki, require_client_cert=True)
    try:
        for target in (tls, mtls):
            asyncio.run(_seed(plain, target))
        yield TlsRegistries(plain, tls, mtls, built.digest)
    finally:
        tls.cleanup()
        mtls.cleanup()


class TestCopyTls:
    """`replicator copy` verifies registry certificates unless given their CA."""

    def test_self_signed_registry_is_refused_by_default(
        self, tls_registries: TlsRegistries, dst_registry: Registry
    ) -> None:
        """Without --src-ca-file, an HTTPS registry whose CA is not trusted fails the copy at
        once with TLS_ERROR naming the untrusted certificate and the fix; nothing lands."""
        alias = loopback_alias()
        if alias is None:
            pytest.skip("no host name other than localhost resolves to 127.0.0.1 here")
        run = run_copy(f"{alias}:{tls_registries.tls.port}/app:v1", f"{dst_registry.host}/app:v1")
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == ["TLS_ERROR"], str(run)
        assert "certificate is not trusted" in run.stderr
        assert "--src-ca-file" in run.stderr
        assert dst_registry.repositories() == []

    def test_ca_file_is_accepted(
        self, tls_registries: TlsRegistries, dst_registry: Registry
    ) -> None:
        """With --src-ca-file the HTTPS registry (on 127.0.0.1, which would otherwise be plain
        HTTP) is verified and the image arrives with its digest."""
        run = run_copy(
            f"{tls_registries.tls.host}/app:v1",
            f"{dst_registry.host}/app:v1",
            "--src-ca-file",
            str(tls_registries.tls.pki.ca_file),
        )
        assert run.exit_code == 0, str(run)
        assert skopeo.digest_of(f"{dst_registry.host}/app:v1") == tls_registries.digest

    def test_registry_requiring_a_client_certificate_refuses_the_copy(
        self, tls_registries: TlsRegistries, dst_registry: Registry
    ) -> None:
        """A registry requiring a client certificate refuses `copy` (which has none) with
        TLS_ERROR saying a client certificate is required, not a traceback."""
        run = run_copy(
            f"{tls_registries.mtls.host}/app:v1",
            f"{dst_registry.host}/app:v1",
            "--src-ca-file",
            str(tls_registries.mtls.pki.ca_file),
        )
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == ["TLS_ERROR"], str(run)
        assert "client certificate" in run.stderr
        assert "Traceback" not in run.stderr


# Daemon sources: name -> (region, which registry, [registries.<name>] TLS lines). Two sources
# share each registry, one naming it `localhost`, the other 127.0.0.1 (a config refuses two
# registries at one host); the certificate covers both names.
_DAEMON_CASES = {
    "noca": ("us-east-1", "tls", []),
    "withca": ("us-east-2", "tls", ["ca_file = {ca}"]),
    "nocert": ("us-west-1", "mtls", ["ca_file = {ca}"]),
    "withcert": (
        "ca-central-1",
        "mtls",
        ["ca_file = {ca}", "client_cert = {cert}", "client_key = {key}"],
    ),
}
_LOCALHOST_CASES = frozenset({"noca", "nocert"})
_DAEMON_EXPECTED = {
    "noca": ("FAILED", "certificate is not trusted"),
    "withca": ("COMPLETE", None),
    "nocert": ("FAILED", "client certificate"),
    "withcert": ("COMPLETE", None),
}


@pytest.fixture(scope="module")
def daemon_tls_jobs(
    tls_registries: TlsRegistries,
    registry_factory: RegistryFactory,
    mosquitto: Mosquitto,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, tuple[str, str | None, str | None]], Registry]]:
    """One daemon whose four HTTPS sources differ only in their TLS settings, one push event
    each, replicating to a plain destination; (state, code, reason) per source."""
    folder = tmp_path_factory.mktemp("daemon-tls")
    destination = registry_factory()
    settings = DaemonSettings(
        broker_port=mosquitto.port,
        journal_url=f"sqlite:///{folder / 'journal.db'}",
        client_id="security-daemon-tls",
        max_attempts=1,
    )
    target = ("us-west-2", ACCOUNT)
    specs = [
        RegistrySpec(
            name,
            ACCOUNT,
            region,
            getattr(tls_registries, kind).url.replace(
                "127.0.0.1", "localhost" if name in _LOCALHOST_CASES else "127.0.0.1"
            ),
            replication={"rules": [rule([target], [f"{name}/"])]},
        )
        for name, (region, kind, _) in _DAEMON_CASES.items()
    ]
    specs.append(RegistrySpec("dst", ACCOUNT, "us-west-2", destination.url))
    config = write_config(folder, specs, settings)
    pki = tls_registries.tls.pki
    files = {
        "ca": json.dumps(str(pki.ca_file)),
        "cert": json.dumps(str(pki.client_cert)),
        "key": json.dumps(str(pki.client_key)),
    }
    for name, (_, _, lines) in _DAEMON_CASES.items():
        add_lines(config, f"registries.{name}", [line.format(**files) for line in lines])
    daemon = DaemonProcess(config, settings.http_port).start()
    try:
        # Each source's repository is `<name>/app`: seeded under that name first.
        for name, (_, kind, _) in _DAEMON_CASES.items():
            asyncio.run(_seed(tls_registries.plain, getattr(tls_registries, kind), f"{name}/app"))
            payload = envelope(f"{name}/app", tls_registries.digest, tag="v1")
            publish(mosquitto.port, f"registry/{name}/events", payload)
        rows = JournalReader(settings.journal_url).wait_finished(
            len(_DAEMON_CASES), timeout=FINISHED_WITHIN_SECONDS
        )
        outcome = {
            row.source: (row.state.value, row.failure_code, row.failure_reason) for row in rows
        }
        yield outcome, destination
    finally:
        daemon.stop()


class TestDaemonTls:
    """The daemon's [registries.<name>] TLS settings: verification on by default, ca_file,
    client_cert / client_key."""

    @pytest.mark.parametrize("source", list(_DAEMON_CASES), ids=list(_DAEMON_CASES))
    def test_job_outcome(
        self,
        daemon_tls_jobs: tuple[dict[str, tuple[str, str | None, str | None]], Registry],
        source: str,
    ) -> None:
        """Without ca_file the job FAILS with TLS_ERROR (certificate not trusted); with it, it
        completes; an mTLS source without client_cert FAILS with TLS_ERROR (client
        certificate required), with it the image arrives with its digest."""
        outcome, destination = daemon_tls_jobs
        state, code, reason = outcome[source]
        expected_state, expected_reason = _DAEMON_EXPECTED[source]
        assert state == expected_state, outcome[source]
        if expected_reason is None:
            assert manifest_digest(destination.url, f"{source}/app", "v1") is not None
        else:
            assert code == "TLS_ERROR", outcome[source]
            assert expected_reason in (reason or "")
            assert manifest_digest(destination.url, f"{source}/app", "v1") is None


def _mqtt_config(folder: Path, broker: Mosquitto, mqtt_lines: list[str]) -> Path:
    """A config naming `broker` with extra [mqtt] lines (and no registries to speak of)."""
    settings = DaemonSettings(
        broker_port=broker.port, journal_url=f"sqlite:///{folder / 'j.db'}", client_id="sec-mq"
    )
    config = write_config(folder, [RegistrySpec("r1", ACCOUNT, "us-east-1", "http://127.0.0.1:1")],
                          settings)  # fmt: skip
    add_lines(config, "mqtt", mqtt_lines)
    return config


class TestBrokerClientCertificate:
    """mTLS to the broker: the [mqtt] client_cert / client_key are presented."""

    @pytest.fixture
    def broker(self, pki: Pki, tmp_path: Path) -> Iterator[SecuredMosquitto]:
        """A TLS broker requiring a client certificate signed by the test CA."""
        folder = tmp_path / "broker"
        folder.mkdir()
        broker = SecuredMosquitto(folder, pki=pki, require_client_cert=True)
        yield broker
        broker.cleanup()

    async def test_with_client_certificate_connects(
        self, broker: SecuredMosquitto, pki: Pki, tmp_path: Path
    ) -> None:
        """With tls, ca_file, client_cert and client_key from the config, the bus connects
        and a message goes round."""
        config = _mqtt_config(tmp_path, broker, [
            "tls = true", f"ca_file = {json.dumps(str(pki.ca_file))}",
            f"client_cert = {json.dumps(str(pki.client_cert))}",
            f"client_key = {json.dumps(str(pki.client_key))}",
        ])  # fmt: skip
        options = BusOptions.from_config(load_config(config).mqtt, persistent=False)
        async with Bus(options) as bus:
            await bus.wait_connected(within=10.0)
            await bus.publish("registry/r1/events", b"hello")
            async with asyncio.timeout(10.0):
                message = await anext(bus.messages())
            await bus.ack(message)
        assert message.payload == b"hello"

    async def test_without_client_certificate_fails_clearly(
        self,
        broker: SecuredMosquitto,
        pki: Pki,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Without client_cert the broker refuses the handshake: no connection (BusError), and
        the MQTT client's log (replicator.mqtt) names the missing certificate."""
        config = _mqtt_config(
            tmp_path, broker, ["tls = true", f"ca_file = {json.dumps(str(pki.ca_file))}"]
        )
        options = BusOptions.from_config(load_config(config).mqtt, persistent=False)
        with caplog.at_level(logging.WARNING, logger="replicator.mqtt"):
            async with Bus(options) as bus:
                with pytest.raises(BusError):
                    await bus.wait_connected(within=2.0)
        reasons = [r.getMessage() for r in caplog.records if r.name == "replicator.mqtt"]
        assert any("certificate required" in reason for reason in reasons), reasons


# Secrets of the failing-auth run: each must appear in no output.
REGISTRY_USER = ("alice", "registry-right-password-5x8q")
WRONG_REGISTRY_PASSWORD = "registry-wrong-password-7k2m"
MQTT_USER = ("replicator", "mqtt-password-3j9w")
WRONG_MQTT_PASSWORD = "mqtt-wrong-password-4h6v"
BRIDGE_TOKEN = "bridge-token-9p1z"
WRONG_BRIDGE_TOKEN = "bridge-wrong-token-2c5n"
SECRETS = {
    "registry-password": WRONG_REGISTRY_PASSWORD,
    "registry-basic-header": base64.b64encode(
        f"{REGISTRY_USER[0]}:{WRONG_REGISTRY_PASSWORD}".encode()
    ).decode(),
    "mqtt-password": MQTT_USER[1],
    "wrong-mqtt-password": WRONG_MQTT_PASSWORD,
    "bridge-token": BRIDGE_TOKEN,
    "wrong-bridge-token": WRONG_BRIDGE_TOKEN,
}


@dataclass
class SecretsRun:
    """Every output of a daemon + bridge run with failing auth, by name, as bytes."""

    outputs: dict[str, bytes]
    job: tuple[str, str | None]
    wrong_token_status: int
    wrong_mqtt_logged: bool


@pytest.fixture(scope="module")
def secrets_run(
    registry_factory: RegistryFactory,
    image: tuple[Path, BuiltImage],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SecretsRun]:
    """A source needing a password the daemon gets wrong, a broker with a password file, a
    bridge with a token (and a request with a wrong one), a bridge with a wrong MQTT password;
    then every log, the journal's bytes, /metrics, `status --json` and `jobs --json`."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "broker").mkdir()
    broker = SecuredMosquitto(folder / "broker", user=MQTT_USER)
    layout, built = image
    source = registry_factory(auth=REGISTRY_USER)
    push_over_http(layout, "v1", source.url, "prod/app", auth=REGISTRY_USER)
    destination = registry_factory()
    settings = DaemonSettings(
        broker_port=broker.port,
        journal_url=f"sqlite:///{folder / 'journal.db'}",
        client_id="security-secrets",
        max_attempts=1,
    )
    specs = [
        RegistrySpec("use1", ACCOUNT, "us-east-1", source.url,
                     replication={"rules": [rule([("us-west-2", ACCOUNT)])]}),
        RegistrySpec("usw2", ACCOUNT, "us-west-2", destination.url),
    ]  # fmt: skip
    config = write_config(folder, specs, settings)
    (folder / "registry-password").write_text(WRONG_REGISTRY_PASSWORD + "\n")
    (folder / "mqtt-password").write_text(MQTT_USER[1] + "\n")
    (folder / "bridge-token").write_text(BRIDGE_TOKEN + "\n")
    add_lines(config, "registries.use1", [f'username = "{REGISTRY_USER[0]}"',
                                          'password_file = "registry-password"'])  # fmt: skip
    add_lines(config, "mqtt", [f'username = "{MQTT_USER[0]}"', 'password_file = "mqtt-password"'])
    add_lines(config, "bridge", ['token_file = "bridge-token"'])
    # A second config, identical but for a wrong MQTT password, for a bridge that is refused.
    wrong_config = folder / "wrong.toml"
    wrong_bridge_port = free_port()
    wrong_config.write_text(
        config.read_text()
        .replace(f"127.0.0.1:{settings.bridge_port}", f"127.0.0.1:{wrong_bridge_port}")
        .replace('password_file = "mqtt-password"', 'password_file = "wrong-mqtt-password"')
    )
    (folder / "wrong-mqtt-password").write_text(WRONG_MQTT_PASSWORD + "\n")

    daemon = DaemonProcess(config, settings.http_port).start()
    bridge = BridgeProcess(config, settings.bridge_port).start()
    wrong_bridge = BridgeProcess(wrong_config, wrong_bridge_port).start()
    try:
        url = bridge.events_url("use1")
        body = envelope("prod/app", built.digest, tag="v1")
        headers = {"content-type": "application/json"}
        refused = httpx.post(
            url, content=body, headers=headers | {"authorization": f"Bearer {WRONG_BRIDGE_TOKEN}"}
        )
        accepted = httpx.post(
            url, content=body, headers=headers | {"authorization": f"Bearer {BRIDGE_TOKEN}"}
        )
        assert accepted.status_code == 200, accepted.text
        (row,) = JournalReader(settings.journal_url).wait_finished(
            1, timeout=FINISHED_WITHIN_SECONDS
        )
        wait_for(
            lambda: bool(wrong_bridge.events("mqtt_connect_failed")),
            timeout=FINISHED_WITHIN_SECONDS,
            what="the wrong-password bridge to be refused by the broker",
        )
        metrics = daemon.metrics().encode()
        status = replicator_cli(
            config, "status", "--repository", "prod/app", "--image-digest", built.digest, "--json"
        )
        jobs = replicator_cli(config, "jobs", "--json")
        assert status.returncode == 0, status.stderr
        outputs = {
            "daemon-log": daemon.log_path.read_bytes(),
            "bridge-log": bridge.log_path.read_bytes(),
            "wrong-mqtt-bridge-log": wrong_bridge.log_path.read_bytes(),
            "metrics": metrics,
            "status-json": (status.stdout + status.stderr).encode(),
            "jobs-json": (jobs.stdout + jobs.stderr).encode(),
        }
        for path in sorted(folder.glob("journal.db*")):
            outputs[f"journal:{path.name}"] = path.read_bytes()
        yield SecretsRun(
            outputs,
            (row.state.value, row.failure_code),
            refused.status_code,
            bool(wrong_bridge.events("mqtt_connect_failed")),
        )
    finally:
        for process in (daemon, bridge, wrong_bridge):
            process.stop()
        broker.cleanup()


class TestSecretsStayOut:
    """Registry passwords, the MQTT password and the bridge token appear in no output."""

    def test_the_run_exercised_every_failure(self, secrets_run: SecretsRun) -> None:
        """The job failed on the registry password (AUTH_FAILED), the wrong bridge token got
        401, and the bridge with the wrong MQTT password was refused by the broker."""
        assert secrets_run.job == ("FAILED", "AUTH_FAILED")
        assert secrets_run.wrong_token_status == 401
        assert secrets_run.wrong_mqtt_logged
        assert any(name.startswith("journal:") for name in secrets_run.outputs)

    @pytest.mark.parametrize("secret", list(SECRETS), ids=list(SECRETS))
    def test_secret_appears_in_no_output(self, secrets_run: SecretsRun, secret: str) -> None:
        """The secret's bytes are absent from the logs, journal files, /metrics, status and
        jobs output."""
        needle = SECRETS[secret].encode()
        leaks = [name for name, data in secrets_run.outputs.items() if needle in data]
        assert leaks == []


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, packed), int(port_hex, 16)))
    return found


class TestLoopbackByDefault:
    """The HTTP API (and the bridge) listen on loopback unless told otherwise."""

    def test_config_defaults_are_loopback(self) -> None:
        """[http] and [bridge] listen defaults are 127.0.0.1."""
        assert HttpConfig().listen == f"127.0.0.1:{DEFAULT_API_PORT}"
        assert BridgeConfig().listen.startswith("127.0.0.1:")

    def test_daemon_without_listen_binds_loopback_only(
        self, mosquitto: Mosquitto, tmp_path: Path
    ) -> None:
        """A daemon whose config has no [http] listen serves its API on 127.0.0.1:9478 and
        listens on no other address."""
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", DEFAULT_API_PORT)) == 0:
                pytest.skip(f"something else listens on the default port {DEFAULT_API_PORT}")
        settings = DaemonSettings(
            broker_port=mosquitto.port,
            journal_url=f"sqlite:///{tmp_path / 'journal.db'}",
            client_id="security-loopback",
        )
        config = write_config(
            tmp_path, [RegistrySpec("r1", ACCOUNT, "us-east-1", "http://127.0.0.1:1")], settings
        )
        text = config.read_text()
        config.write_text(text.replace(f'listen = "127.0.0.1:{settings.http_port}"\n', "", 1))
        daemon = DaemonProcess(config, DEFAULT_API_PORT).start()
        try:
            addresses = _listening_addresses(daemon.pid)
        finally:
            daemon.stop()
        assert ("127.0.0.1", DEFAULT_API_PORT) in addresses
        assert {address for address, _ in addresses} == {"127.0.0.1"}


class TestPolicyDenial:
    """A denied replication sends not one request for the repository to the destination."""

    def test_denied_repository_never_reaches_the_destination(
        self,
        mosquitto_factory: MosquittoFactory,
        registry_factory: RegistryFactory,
        image: tuple[Path, BuiltImage],
        tmp_path: Path,
    ) -> None:
        """euw1's policy admits prod/* only: dev/app is POLICY_DENIED there, and euw1's access
        log has no request for /v2/dev/app (while prod/app and usw2 show requests)."""
        stack = start_stack(
            tmp_path, mosquitto_factory(), lambda url: registry_factory(notifications_url=url)
        )
        try:
            layout, _ = image
            push_over_http(layout, "v1", stack.source.url, "prod/app")
            push_over_http(layout, "v1", stack.source.url, "dev/app")
            rows = JournalReader(stack.settings.journal_url).wait_finished(
                4, timeout=FINISHED_WITHIN_SECONDS
            )
        finally:
            stack.stop()
        outcome = {(r.repository, r.destination): (r.state.value, r.failure_code) for r in rows}
        assert outcome[("dev/app", EUW1)] == ("FAILED", "POLICY_DENIED")
        assert outcome[("dev/app", USW2)] == ("COMPLETE", None)
        assert outcome[("prod/app", EUW1)] == ("COMPLETE", None)
        denied_log = stack.registries[EUW1].log_text()
        assert "/v2/prod/app/" in denied_log
        assert "/v2/dev/app" not in denied_log
        assert "/v2/dev/app/" in stack.registries[USW2].log_text()
