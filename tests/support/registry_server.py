"""A real CNCF distribution registry (Debian's `docker-registry`) on a free loopback port.

The config is written as JSON, which the registry's YAML parser reads as YAML. Storage is a fresh
directory per registry; stdout (access log) and stderr (application log) go to one log file that
tests may read to see which requests the registry served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from tests.support.ports import free_port

REGISTRY_BINARY = "/usr/bin/docker-registry"
# The registry starts in well under a second; 20 s leaves room for a loaded 2-core CI machine.
READY_TIMEOUT_SECONDS = 20.0
# Seconds granted to a SIGTERM before SIGKILL; the registry holds no state worth a long wait.
STOP_TIMEOUT_SECONDS = 5.0
# bcrypt cost 4 is the minimum: htpasswd checks run on every request and tests need no strength.
BCRYPT_ROUNDS = 4
# Upload sessions are signed with this secret; a fixed one keeps uploads valid across restart().
HTTP_SECRET = "replicator-tests-upload-secret"


class Registry:
    """One `docker-registry serve` process with its own storage, config and log."""

    def __init__(
        self,
        *,
        auth: tuple[str, str] | None = None,
        token_auth: dict[str, Any] | None = None,
        notifications_url: str | None = None,
        notification_headers: dict[str, str] | None = None,
        workdir: Path | None = None,
        parent: Path | None = None,
    ) -> None:
        # `parent`: where a workdir of its own is made (None: the temp dir).
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="replicator-registry-", dir=parent))
        self._owns_workdir = workdir is None
        self.root = self.workdir / "storage"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "registry.log"
        self.config_path = self.workdir / "config.yml"
        self.auth = auth
        self.token_auth = token_auth  # the `auth:` section of a token issuer (token_issuer.py)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config(notifications_url, notification_headers or {})
        self.start()

    def _write_config(self, notifications_url: str | None, headers: dict[str, str]) -> None:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {
                "level": "warn",
                "formatter": "text",
                "accesslog": {"disabled": False},
                "fields": {"service": "registry"},
            },
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": HTTP_SECRET},
        }
        if self.auth is not None:
            user, password = self.auth
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS))
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{user}:{hashed.decode()}\n")
            config["auth"] = {"htpasswd": {"realm": "replicator-tests", "path": str(htpasswd)}}
        elif self.token_auth is not None:
            config["auth"] = self.token_auth
        if notifications_url is not None:
            config["notifications"] = {
                "events": {"includereferences": True},
                "endpoints": [
                    {
                        "name": "replicator",
                        "url": notifications_url,
                        "headers": {name: [value] for name, value in headers.items()},
                        "timeout": "2s",
                        "threshold": 10,
                        "backoff": "1s",
                        # As the README configures it: blobs and pulls (the daemon's own
                        # reads of the source among them) are not events to act on.
                        "ignoredmediatypes": ["application/octet-stream"],
                        "ignore": {"actions": ["pull"]},
                    }
                ],
            }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def running(self) -> bool:
        """Whether the registry process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process (appending to the log) and wait until GET /v2/ answers."""
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited at start: {self.log_tail()}")
            try:
                # 200 when open, 401 when auth is on: either way it serves the API.
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"docker-registry on {self.host} not ready: {self.log_tail()}")

    def terminate(self) -> None:
        """Ask the process to stop without waiting for it (`stop()` then waits): a session's
        many registries stop together instead of one after another."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def stop(self) -> None:
        """Stop the process; storage and log stay until `cleanup()`."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same storage."""
        self.stop()
        self.start()

    def wipe(self) -> None:
        """Stop, delete every blob, manifest and repository, and start again on the same port:
        what a restore from an empty backup or a garbage collection of everything looks like."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self.start()

    def cleanup(self) -> None:
        """Stop and delete the work directory when this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        """Everything the registry logged so far (access and application log)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def has_blob(self, digest: str) -> bool:
        """Whether the blob's data file exists in storage (any repository)."""
        algorithm, hex_digest = digest.split(":", 1)
        data = (
            self.root
            / "docker/registry/v2/blobs"
            / algorithm
            / hex_digest[:2]
            / hex_digest
            / "data"
        )
        return data.exists()

    def repositories(self) -> list[str]:
        """Names of the repositories in storage, sorted (read from disk, not the catalog)."""
        base = self.root / "docker/registry/v2/repositories"
        if not base.exists():
            return []
        return sorted(
            str(path.parent.relative_to(base)) for path in base.rglob("_manifests") if path.is_dir()
        )

    def __repr__(self) -> str:
        auth = "token" if self.token_auth else "yes" if self.auth else "no"
        return f"Registry({self.host}, auth={auth})"
