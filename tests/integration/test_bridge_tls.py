"""`replicator bridge` on TLS with client certificates required: a GitHub webhook posted with
curl, refused without a client certificate, and the server certificate reloaded on SIGHUP."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import BridgeProcess, metric_value, wait_for
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port
from tests.support.tls import Pki, make_pki

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "webhooks" / "github-push.json"
SECRET = b"github-webhook-secret"
QUAY_SAMPLE = SAMPLE.with_name("quay-push.json")
QUAY_TOKEN = "quay-url-token-4f1c"
# The bridge connects to the broker within a second of listening; 20 s covers a loaded machine.
WITHIN_SECONDS = 20.0
CURL_TIMEOUT_SECONDS = 10


def write_config(folder: Path, broker: Mosquitto, port: int, pki: Pki) -> Path:
    """A bridge on TLS (the certificate copied to bridge.crt/.key) requiring clients of the
    PKI's CA, and source `src` authenticated by GitHub's HMAC signature; `src` is at ghcr.io,
    the host GitHub's sample names (the bridge refuses a body naming another registry, and
    never contacts this one)."""
    shutil.copy(pki.server_cert, folder / "bridge.crt")
    shutil.copy(pki.server_key, folder / "bridge.key")
    (folder / "github.secret").write_bytes(SECRET + b"\n")
    (folder / "quay.secret").write_text(QUAY_TOKEN + "\n")
    path = folder / "replicator.toml"
    path.write_text(
        f"""version = 1
[mqtt]
host = "127.0.0.1"
port = {broker.port}
client_id = "bridge-tls-{port}"
[bridge]
listen = "127.0.0.1:{port}"
tls_cert = "bridge.crt"
tls_key = "bridge.key"
client_ca = "{pki.ca_file}"
[bridge.sources.src]
format = "github"
auth = "hmac-sha256"
secret_file = "github.secret"
[bridge.sources.quay]
auth = "query"
secret_file = "quay.secret"
[registries.src]
account = "111122223333"
region = "us-east-1"
url = "https://ghcr.io"
[registries.quay]
account = "111122223333"
region = "us-west-2"
url = "http://127.0.0.1:2"
"""
    )
    return path


def curl(
    url: str, *, ca: Path, client: Pki | None, body: Path | None = None, signature: str = ""
) -> tuple[int, str]:
    """curl `url` (POST of `body` when given, as GitHub's with `signature`); (curl's exit
    code, its output ending in the status code)."""
    command = ["curl", "--silent", "--show-error", "--max-time", str(CURL_TIMEOUT_SECONDS),
               "--cacert", str(ca), "--write-out", "%{http_code}", "--output", "-"]  # fmt: skip
    if client is not None:
        command += ["--cert", str(client.client_cert), "--key", str(client.client_key)]
    if body is not None:
        command += ["--data-binary", f"@{body}", "-H", "Content-Type: application/json"]
    if signature:
        command += ["-H", "X-GitHub-Event: registry_package",
                    "-H", f"X-Hub-Signature-256: {signature}"]  # fmt: skip
    result = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_SECONDS * 2,
        check=False,
    )
    return result.returncode, result.stdout


def test_webhook_over_mtls_with_curl(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """With a client certificate and the right signature curl's webhook is published (200);
    without a certificate the handshake fails, with a bad signature it is 401; Quay's token in
    the URL is checked and never logged; after the certificate files are replaced, SIGHUP
    makes the bridge serve the new certificate."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    config = write_config(tmp_path, mosquitto, port, pki)
    signature = "sha256=" + hmac.new(SECRET, SAMPLE.read_bytes(), hashlib.sha256).hexdigest()
    url = f"https://127.0.0.1:{port}"
    bridge = BridgeProcess(config, port).start()
    try:
        posted: list[tuple[int, str]] = []

        def published() -> bool:
            posted.append(
                curl(f"{url}/events/src", ca=pki.ca_file, client=pki, body=SAMPLE,
                     signature=signature)
            )  # fmt: skip
            return posted[-1][0] == 0 and posted[-1][1].endswith("200")

        wait_for(published, timeout=WITHIN_SECONDS, what=f"200 from the bridge: {posted[-1:]}")
        code, _ = curl(f"{url}/events/src", ca=pki.ca_file, client=None, body=SAMPLE,
                       signature=signature)  # fmt: skip
        assert code != 0  # the TLS handshake (or the first read) fails without a certificate
        _, output = curl(f"{url}/events/src", ca=pki.ca_file, client=pki, body=SAMPLE,
                         signature="sha256=" + "0" * 64)  # fmt: skip
        assert output.endswith("401")
        _, metrics = curl(f"{url}/metrics", ca=pki.ca_file, client=pki)
        assert metric_value(metrics, "replicator_bridge_requests_total",
                            source="src", format="github", outcome="published") >= 1  # fmt: skip
        assert metric_value(metrics, "replicator_bridge_broker_connected") == 1
        _, output = curl(f"{url}/events/quay?token={QUAY_TOKEN}", ca=pki.ca_file, client=pki,
                         body=QUAY_SAMPLE)  # fmt: skip
        assert output.endswith("200")
        _, output = curl(f"{url}/events/quay?token=guess", ca=pki.ca_file, client=pki,
                         body=QUAY_SAMPLE)  # fmt: skip
        assert output.endswith("401")
        assert QUAY_TOKEN not in bridge.log_path.read_text()

        renewed = make_pki(tmp_path / "renewed")
        shutil.copy(renewed.server_cert, tmp_path / "bridge.crt")
        shutil.copy(renewed.server_key, tmp_path / "bridge.key")
        assert curl(f"{url}/healthz", ca=renewed.ca_file, client=pki)[0] != 0
        before = len(bridge.events("config_reloaded"))
        bridge.send(signal.SIGHUP)
        wait_for(lambda: len(bridge.events("config_reloaded")) > before,
                 timeout=WITHIN_SECONDS, what="config_reloaded")  # fmt: skip
        code, output = curl(f"{url}/healthz", ca=renewed.ca_file, client=pki)
        assert (code, output[-3:]) == (0, "200")
    finally:
        bridge.stop()
