"""Pulp (pulp-container) as a second registry implementation, opt-in: REPLICATOR_TEST_PULP=1.

Pulp is the registry behind Red Hat Satellite. It runs from its own virtual environment
(scripts/pulp.sh builds it; $REPLICATOR_PULP_VENV, default .pulp-venv) on the session's
PostgreSQL: migrations (about 75 s on two loaded cores), then its API server (which serves
/v2/), its content app and one worker, on free loopback ports. Token auth is off, so the
registry takes the admin's Basic credentials. Starting it takes minutes: hence opt-in.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.journal_fixtures import PostgresServer
from tests.support.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin"
# Migrations take about 75 s on two loaded cores; the servers a few seconds more.
MIGRATE_SECONDS = 600
READY_SECONDS = 120.0
STOP_SECONDS = 20.0


@dataclass(frozen=True)
class Pulp:
    """A running Pulp: its registry's host:port and the admin's credentials."""

    host: str
    password: str

    @property
    def creds(self) -> str:
        """USER:PASS for --dest-creds / --src-creds."""
        return f"{ADMIN}:{self.password}"


def _venv() -> Path | None:
    if os.environ.get("REPLICATOR_TEST_PULP") != "1":
        return None
    venv = Path(os.environ.get("REPLICATOR_PULP_VENV", PROJECT_ROOT / ".pulp-venv"))
    return venv if (venv / "bin" / "pulpcore-manager").exists() else None


def _settings(folder: Path, postgres: PostgresServer, database: str, content_port: int) -> Path:
    key = folder / "db.key"
    key.write_bytes(base64.urlsafe_b64encode(secrets.token_bytes(32)))
    for name in ("media", "work", "tmp"):
        (folder / name).mkdir()
    path = folder / "settings.py"
    path.write_text(
        f"""SECRET_KEY = {secrets.token_hex(16)!r}
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": {database!r},
    "USER": {postgres.user!r}, "HOST": {postgres.host!r}, "PORT": {postgres.port}}}}}
CONTENT_ORIGIN = "http://127.0.0.1:{content_port}"
MEDIA_ROOT = "{folder}/media"
WORKING_DIRECTORY = "{folder}/work"
FILE_UPLOAD_TEMP_DIR = "{folder}/tmp"
STORAGES = {{"default": {{"BACKEND": "pulpcore.app.models.storage.FileSystem"}},
    "staticfiles": {{"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}}}
DB_ENCRYPTION_KEY = "{key}"
TOKEN_AUTH_DISABLED = True
ALLOWED_HOSTS = ["*"]
"""
    )
    return path


def _create_database(postgres: PostgresServer) -> str:
    import psycopg2  # the postgres extra, as journal_fixtures imports it

    name = f"pulp_{os.getpid()}"
    connection = psycopg2.connect(
        host=postgres.host, port=postgres.port, user=postgres.user, dbname="postgres"
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()
    return name


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], folder: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            break
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    logs = "".join(p.read_text()[-1500:] for p in sorted(folder.glob("*.log")))
    raise RuntimeError(f"Pulp did not become ready at {url}: {logs}")


@pytest.fixture(scope="session")
def pulp(request: pytest.FixtureRequest) -> Iterator[Pulp]:
    """A Pulp for the session (skipped unless REPLICATOR_TEST_PULP=1 and scripts/pulp.sh ran)."""
    venv = _venv()
    if venv is None:
        pytest.skip("Pulp tests are opt-in: scripts/pulp.sh, then REPLICATOR_TEST_PULP=1")
    # Asked only now: a skipped run starts no PostgreSQL.
    postgres_server: PostgresServer = request.getfixturevalue("postgres_server")
    folder = Path(tempfile.mkdtemp(prefix="replicator-pulp-"))
    api_port, content_port = free_port(), free_port()
    settings = _settings(folder, postgres_server, _create_database(postgres_server), content_port)
    env = {**os.environ, "PULP_SETTINGS": str(settings),
           "DJANGO_SETTINGS_MODULE": "pulpcore.app.settings"}  # fmt: skip
    manager = str(venv / "bin" / "pulpcore-manager")
    subprocess.run([manager, "migrate", "--noinput"], env=env, check=True,
                   capture_output=True, timeout=MIGRATE_SECONDS)  # fmt: skip
    password = secrets.token_hex(12)
    subprocess.run([manager, "reset-admin-password", "--password", password], env=env,
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    commands = {
        "api": [str(venv / "bin" / "pulpcore-api"), "--bind", f"127.0.0.1:{api_port}",
                "--workers", "1"],
        "content": [str(venv / "bin" / "pulpcore-content"), "--bind",
                    f"127.0.0.1:{content_port}", "--workers", "1"],
        "worker": [str(venv / "bin" / "pulpcore-worker")],
    }  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            with (folder / f"{name}.log").open("wb") as log:
                # Own session: gunicorn's workers are stopped with their master.
                processes.append(subprocess.Popen(command, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True))  # fmt: skip
        _wait_ready(f"http://127.0.0.1:{api_port}/pulp/api/v3/status/", processes, folder)
        yield Pulp(f"127.0.0.1:{api_port}", password)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_SECONDS)
