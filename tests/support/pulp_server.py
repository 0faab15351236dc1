"""Pulp (pulp-container), the suite's second registry implementation, started for the session.

Pulp is the registry behind Red Hat Satellite. scripts/pulp.sh installs it once per lock into a
cache outside the clone (requirements-pulp.lock; its own venv: Pulp's Django stack must not meet
replicator's pins). On the session's PostgreSQL it runs its API server (which serves /v2/ and the
token service), its content app (where blob GETs redirect) and one worker, on free loopback ports,
with token auth on as deployed (ES256 tokens signed by a key made for the session).

Migrations take minutes, so they run once per venv: the migrated schema is dumped beside the venv
and restored into each session's database (seconds). The server starts only when a test asks for
the `pulp` fixture. Pulp that cannot install or start FAILS those tests, naming the cause; set
REPLICATOR_TEST_PULP=0 to leave them out (they are skipped, saying so).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from replicator.domain.images.media import MANIFEST_ACCEPT
from tests.support.journal_fixtures import PostgresServer, postgres_bin
from tests.support.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin"
OPT_OUT = "REPLICATOR_TEST_PULP"
# scripts/pulp.sh installs about 80 packages from the index the first time (3 minutes here).
INSTALL_SECONDS = 1200
# Migrations take 1-3 minutes on two loaded cores (once per venv); a restore a few seconds.
MIGRATE_SECONDS = 900
RESTORE_SECONDS = 120
# Three Django processes importing on two loaded cores.
READY_SECONDS = 180.0
STOP_SECONDS = 20.0
# Pulp's token service in the tests is found at the registry's own origin, as deployed.
TOKEN_PATH = "/token/"
# One worker per server (two cores); no control socket (gunicorn's default path is one per
# machine, which Pulp's two servers would share); an access log with each request's duration.
GUNICORN = ["--workers", "1", "--no-control-socket", "--access-logfile", "-"]
API_ACCESS = ["--access-logformat", "%(t)s %(m)s %(U)s?%(q)s %(s)s %(B)s %(L)ss"]
CONTENT_ACCESS = ["--access-logformat", "%t %r %s %b %Tfs"]  # aiohttp's own format letters


@dataclass(frozen=True)
class Pulp:
    """A running Pulp: its registry's host:port and the admin's credentials."""

    host: str
    password: str

    @property
    def creds(self) -> str:
        """USER:PASS for --dest-creds / --src-creds."""
        return f"{ADMIN}:{self.password}"

    @property
    def credentials(self) -> tuple[str, str]:
        """(user, password), for skopeo."""
        return ADMIN, self.password


def registry_get(host: str, path: str, credentials: tuple[str, str] | None) -> httpx.Response:
    """GET http://host/path, answering a Bearer challenge with a token fetched with
    `credentials` as a client does (skopeo tries https first and waits 10 s on Pulp's http
    port for each command)."""
    url = f"http://{host}{path}"
    # Pulp answers 406 to a tag list asked with manifest types.
    headers = {"accept": MANIFEST_ACCEPT} if "/manifests/" in path else {}
    response = httpx.get(url, headers=headers, timeout=30.0)
    challenge = response.headers.get("www-authenticate", "")
    if response.status_code != 401 or not challenge.lower().startswith("bearer "):
        return response
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm")
    token = httpx.get(realm, params=params, auth=credentials, timeout=30.0)
    token.raise_for_status()
    headers["authorization"] = f"Bearer {token.json()['token']}"
    return httpx.get(url, headers=headers, timeout=30.0, follow_redirects=True)


class PulpUnavailable(Exception):
    """Pulp could not be installed or started; the message says why and how to opt out."""


def _unavailable(what: str, detail: str) -> PulpUnavailable:
    return PulpUnavailable(
        f"Pulp (the second registry implementation of the suite) {what}: {detail[-3000:]}\n"
        f"Set {OPT_OUT}=0 to leave the Pulp tests out (README, Development)."
    )


def pulp_venv() -> Path:
    """The venv scripts/pulp.sh installed (installing it now if this is the first run)."""
    try:
        result = subprocess.run([str(PROJECT_ROOT / "scripts" / "pulp.sh")], capture_output=True,
                                text=True, timeout=INSTALL_SECONDS, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise _unavailable("did not install", f"scripts/pulp.sh ran {exc.timeout} s") from exc
    if result.returncode != 0:
        raise _unavailable("did not install", f"scripts/pulp.sh: {result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def _settings(
    folder: Path, postgres: PostgresServer, database: str, ports: tuple[int, int]
) -> Path:
    api_port, content_port = ports
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "token.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    (folder / "token.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    (folder / "db.key").write_bytes(base64.urlsafe_b64encode(secrets.token_bytes(32)))
    for name in ("media", "work", "tmp"):
        (folder / name).mkdir()
    path = folder / "settings.py"
    # ANALYTICS off: Pulp would report to its project's server; tests reach only loopback.
    # MD5 passwords: the default PBKDF2 costs ~0.5 s of a loaded core per Basic check.
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
DB_ENCRYPTION_KEY = "{folder}/db.key"
TOKEN_AUTH_DISABLED = False
TOKEN_SERVER = "http://127.0.0.1:{api_port}{TOKEN_PATH}"
TOKEN_SIGNATURE_ALGORITHM = "ES256"
PUBLIC_KEY_PATH = "{folder}/token.pub"
PRIVATE_KEY_PATH = "{folder}/token.pem"
ANALYTICS = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
"""
    )
    return path


def _psql(postgres: PostgresServer, database: str, *args: str, timeout: float) -> None:
    command = [str(postgres_bin() / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", postgres.host,
               "-p", str(postgres.port), "-U", postgres.user, "-d", database, *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise _unavailable("has no database", f"{' '.join(args)[:200]}: {result.stderr}")


def _schema(venv: Path, postgres: PostgresServer, env: dict[str, str], database: str) -> None:
    """Give `database` Pulp's migrated schema: restored from the venv's dump, else migrated (and
    dumped for the next sessions)."""
    major = postgres_bin().parent.name
    dump = venv / f"schema-pg{major}.sql"
    if not dump.exists():
        manager = str(venv / "bin" / "pulpcore-manager")
        result = subprocess.run([manager, "migrate", "--noinput"], env=env, capture_output=True,
                                text=True, timeout=MIGRATE_SECONDS, check=False)  # fmt: skip
        if result.returncode != 0:
            raise _unavailable("did not migrate its database", result.stdout + result.stderr)
        partial = dump.with_suffix(f".{os.getpid()}")
        pg_dump = [str(postgres_bin() / "pg_dump"), "-h", postgres.host, "-p", str(postgres.port),
                   "-U", postgres.user, "--no-owner", "--no-privileges", "-f", str(partial),
                   database]  # fmt: skip
        subprocess.run(pg_dump, check=True, capture_output=True, timeout=RESTORE_SECONDS)
        partial.rename(dump)
        return
    _psql(postgres, database, "-f", str(dump), timeout=RESTORE_SECONDS)


def _add_admin(postgres: PostgresServer, database: str, password: str) -> None:
    """The superuser `admin` with `password`, written as Django's MD5 hasher encodes it (what
    `pulpcore-manager reset-admin-password` does, without a Django start)."""
    salt = secrets.token_hex(8)
    encoded = f"md5${salt}${hashlib.md5((salt + password).encode()).hexdigest()}"
    _psql(postgres, database, "-c",
          "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
          f" is_staff, is_active, date_joined) VALUES ('{encoded}', true, '{ADMIN}', '', '', '',"
          " true, true, now())", timeout=RESTORE_SECONDS)  # fmt: skip


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
    raise _unavailable("did not start", f"{url} not ready after {READY_SECONDS} s: {logs}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL to each process group: the session's database and files are thrown away, and
    gunicorn's graceful stop took 10 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for process in processes:
        process.wait(STOP_SECONDS)


def start_pulp(
    postgres: PostgresServer, folder: Path
) -> tuple[Pulp, list[subprocess.Popen[bytes]]]:
    """Install (once), give a new database the schema, start the three servers; the running
    Pulp and its processes (each in its own process group)."""
    venv = pulp_venv()
    database = postgres.create_database().rsplit("/", 1)[1]
    ports = free_port(), free_port()
    settings = _settings(folder, postgres, database, ports)
    env = {**os.environ, "PULP_SETTINGS": str(settings),
           "DJANGO_SETTINGS_MODULE": "pulpcore.app.settings"}  # fmt: skip
    _schema(venv, postgres, env, database)
    password = secrets.token_hex(12)
    _add_admin(postgres, database, password)
    api = f"127.0.0.1:{ports[0]}"
    commands = {
        "api": [str(venv / "bin" / "pulpcore-api"), "--bind", api, *GUNICORN,
                *API_ACCESS],
        "content": [str(venv / "bin" / "pulpcore-content"), "--bind", f"127.0.0.1:{ports[1]}",
                    *GUNICORN, *CONTENT_ACCESS],
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
        _wait_ready(f"http://{api}/pulp/api/v3/status/", processes, folder)
        # Blob GETs redirect to the content app: its (empty) listing answers 200 once it is up.
        _wait_ready(f"http://127.0.0.1:{ports[1]}/pulp/content/", processes, folder)
    except BaseException:
        _stop(processes)
        raise
    return Pulp(api, password), processes


@pytest.fixture(scope="session")
def pulp(request: pytest.FixtureRequest) -> Iterator[Pulp]:
    """A Pulp for the session, started when the first test that needs it runs."""
    if os.environ.get(OPT_OUT) == "0":
        pytest.skip(f"Pulp tests left out: {OPT_OUT}=0")
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    folder = Path(tempfile.mkdtemp(prefix="replicator-pulp-"))
    try:
        running, processes = start_pulp(postgres, folder)
    except PulpUnavailable as exc:
        unavailable = str(exc)
    else:
        unavailable = ""
    if unavailable:
        pytest.fail(unavailable, pytrace=False)
    try:
        yield running
    finally:
        _stop(processes)
        shutil.rmtree(folder, ignore_errors=True)
