"""Throw-away PKI for the TLS tests, and TLS-serving registries and brokers built on it.

`make_pki(folder)` writes a CA, a server certificate (for 127.0.0.1, localhost and the machine's
own loopback alias) and a client certificate, all signed by that CA, with the `cryptography`
package. `TlsRegistry` is a real `docker-registry` serving HTTPS with that server certificate
(and, with `require_client_cert`, refusing clients without a certificate from the CA);
`SecuredMosquitto` is a real mosquitto with optional TLS, client certificates and a password file.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from replicator.domain.images.refs import is_loopback_host
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_server import READY_TIMEOUT_SECONDS, Registry

# Certificates live for the test session only; two days survives a run that crosses midnight.
VALIDITY = datetime.timedelta(days=2)
# Clock skew between the test process and the servers is nil (same machine); one minute of
# back-dating covers a certificate checked in the second it was made.
BACKDATE = datetime.timedelta(minutes=1)
MOSQUITTO_PASSWD_BINARY = "/usr/bin/mosquitto_passwd"


@dataclass(frozen=True)
class Pki:
    """PEM files of one throw-away CA and the certificates it signed."""

    ca_file: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def loopback_alias() -> str | None:
    """A host name that resolves to 127.0.0.1 but that replicator does not treat as loopback
    (the machine's own name from /etc/hosts, say), so a client uses HTTPS to reach it; None
    when the machine has no such name."""
    for name in (socket.gethostname(), socket.getfqdn()):
        if not name or is_loopback_host(name):
            continue
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
        except OSError:
            continue
        if addresses == {"127.0.0.1"}:
            return name
    return None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


def make_pki(folder: Path, *, hosts: tuple[str, ...] = ()) -> Pki:
    """A CA, a server certificate for 127.0.0.1, localhost, the loopback alias and `hosts`,
    and a client certificate, written as PEM files into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("replicator-tests-ca")
    ca = (
        _builder("replicator-tests-ca", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    names = {"localhost", *hosts}
    alias = loopback_alias()
    if alias:
        names.add(alias)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        _builder("127.0.0.1", ca_name, server_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                + [x509.DNSName(name) for name in sorted(names)]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        _builder("replicator", ca_name, client_key.public_key())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        ca_file=folder / "ca.pem",
        ca_key=folder / "ca.key",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    for cert, path in ((ca, pki.ca_file), (server, pki.server_cert), (client, pki.client_cert)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, pki.ca_key)
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    return pki


class TlsRegistry(Registry):
    """A docker-registry serving HTTPS only (http.tls), optionally requiring a client
    certificate signed by the PKI's CA (http.tls.clientcas)."""

    def __init__(
        self, pki: Pki, *, require_client_cert: bool = False, auth: tuple[str, str] | None = None
    ) -> None:
        self.pki = pki
        self.require_client_cert = require_client_cert
        super().__init__(auth=auth)
        self.url = f"https://{self.host}"

    def _write_config(self, notifications_url: str | None, headers: dict[str, str]) -> None:
        super()._write_config(notifications_url, headers)
        config = json.loads(self.config_path.read_text())
        tls: dict[str, object] = {
            "certificate": str(self.pki.server_cert),
            "key": str(self.pki.server_key),
        }
        if self.require_client_cert:
            tls["clientcas"] = [str(self.pki.ca_file)]
        config["http"]["tls"] = tls
        self.config_path.write_text(json.dumps(config, indent=2))

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting the PKI's CA, presenting its client certificate if asked."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if with_cert:
            context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        context = self.client_context()
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited at start: {self.log_tail()}")
            try:
                url = f"https://{self.host}/v2/"
                if httpx.get(url, verify=context, timeout=1.0).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"docker-registry on {self.host} not ready: {self.log_tail()}")


class SecuredMosquitto(Mosquitto):
    """A mosquitto broker with TLS from `pki` (client certificates required when asked) and/or
    a password file admitting only `user`."""

    def __init__(
        self,
        folder: Path,
        *,
        pki: Pki | None = None,
        require_client_cert: bool = False,
        user: tuple[str, str] | None = None,
    ) -> None:
        self.pki = pki
        self.require_client_cert = require_client_cert
        self.user = user
        super().__init__(folder)

    def _write_config(self) -> None:
        super()._write_config()
        extra: list[str] = []
        if self.pki is not None:
            self.ca_file = self.pki.ca_file
            extra += [
                f"cafile {self.pki.ca_file}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                f"require_certificate {'true' if self.require_client_cert else 'false'}",
            ]
        anonymous = "allow_anonymous true"
        if self.user is not None:
            password_file = self.folder / "passwords"
            subprocess.run(
                [MOSQUITTO_PASSWD_BINARY, "-c", "-b", str(password_file), *self.user],
                check=True,
                capture_output=True,
            )
            password_file.chmod(0o600)
            anonymous = f"allow_anonymous false\npassword_file {password_file}"
        text = self.config_path.read_text().replace("allow_anonymous true", anonymous)
        # Listener options follow the (only) listener line, which comes first.
        self.config_path.write_text(text + "\n".join(extra) + "\n")
