"""Credentials from Docker's `config.json` and podman's `auth.json`, read as docker and podman do.

For one registry host, a file gives, in this order:
1. `credHelpers.<registry>`: that helper, asked through `docker-credential-<name> get`;
2. an `auths.<registry>` entry with credentials: `auth` (base64 of user:password), `username`
   and `password`, and/or `identitytoken` (an OAuth2 refresh token);
3. `credsStore`: the default helper for every registry;
4. nothing: anonymous.
Docker lets `credsStore` shadow inline entries; we take an inline entry first, since `docker
login` with a store writes only an empty `{}` under `auths`, which falls through to the store.

Keys are matched as docker's ConvertToHostname does: the scheme and any path are dropped, so
`https://host/v2/` and `host` name the same registry. Docker Hub answers to `docker.io`,
`index.docker.io` and `registry-1.docker.io`, and its key is `https://index.docker.io/v1/`
(podman writes `docker.io`); its credential helpers are asked for that key, as docker asks.
A key with a path but no scheme is podman's per-namespace entry (`quay.io/team`): it is not used
for the whole registry.

Several files (podman's auth.json, then docker's config.json, for `copy`) are read in order; the
first that has something for the host wins.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from replicator.domain.images.refs import DOCKER_HUB_HOSTS
from replicator.errors import AuthError, ConfigError
from replicator.registry.credentials import Credentials
from replicator.registry.credhelper import TOKEN_USERNAME, helper_executable, helper_get

DOCKER_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True, slots=True)
class Found:
    """What one file says for a host: inline credentials, or a helper to ask."""

    file: Path
    via: str  # "auths", "credHelpers" or "credsStore"
    credentials: Credentials | None = None
    helper: str | None = None

    def describe(self) -> str:
        """Where the credentials come from, without any secret."""
        if self.helper is not None:
            return f"credential helper {helper_executable(self.helper)} ({self.via} in {self.file})"
        return f"{self.via} entry in {self.file}"


def server_url(host: str) -> str:
    """The key docker uses for `host`: Docker Hub's v1 URL, else the host itself."""
    return DOCKER_HUB_KEY if host.lower() in DOCKER_HUB_HOSTS else host


def read_config(path: Path) -> dict[str, object]:
    """The parsed file; ConfigError naming the file when it is unreadable or not an object."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
        raise ConfigError(f"not valid JSON: {exc}", file=str(path)) from exc
    if not isinstance(doc, dict):
        raise ConfigError("is not a JSON object", file=str(path))
    return doc


def _key_host(key: str) -> str | None:
    """The registry a key names (docker's ConvertToHostname), or None for a namespace key."""
    scheme, sep, rest = key.partition("://")
    if not sep:
        rest = scheme
    host, slash, path = rest.partition("/")
    if not sep and slash and path.strip("/"):
        return None
    return host.lower()


def _names(key: str, host: str) -> bool:
    key_host = _key_host(key)
    if key_host is None:
        return False
    if host.lower() in DOCKER_HUB_HOSTS:
        return key_host in DOCKER_HUB_HOSTS
    return key_host == host.lower()


def _section(doc: Mapping[str, object], name: str, path: Path) -> Mapping[str, object]:
    section = doc.get(name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{name} is not an object", file=str(path), field=name)
    return section


def lookup(doc: Mapping[str, object], host: str, path: Path) -> Found | None:
    """What the parsed file `doc` (read from `path`) says for `host`."""
    helpers = _section(doc, "credHelpers", path)
    for key, name in helpers.items():
        if _names(key, host) and isinstance(name, str) and name:
            return Found(path, "credHelpers", helper=name)
    auths = _section(doc, "auths", path)
    # The exact key first (docker does), then any key naming the same registry, in file order.
    keys = [host] if host in auths else []
    keys += [key for key in auths if key != host and _names(key, host)]
    for key in keys:
        credentials = _entry(auths[key], path, key)
        if credentials is not None:
            return Found(path, "auths", credentials=credentials)
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return Found(path, "credsStore", helper=store)
    return None


def _entry(entry: object, path: Path, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    username, password = "", ""
    if entry.get("auth"):
        bad = ConfigError(
            "is not base64 of user:password", file=str(path), field=f"auths.{key}.auth"
        )
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (TypeError, ValueError) as exc:  # not a string, not base64, not UTF-8
            raise bad from exc
        username, colon, password = decoded.partition(":")
        if not username or not colon:
            raise bad
    elif "username" in entry and "password" in entry:
        username, password = str(entry["username"]), str(entry["password"])
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        # `docker login` to ACR stores a placeholder user (a zero UUID) with an empty password.
        return Credentials(username or TOKEN_USERNAME, password, identity_token=token)
    if username:
        return Credentials(username, password)
    return None


def inspect(path: Path, host: str) -> Found | None:
    """What the file at `path` says for `host` (ConfigError when it cannot be used)."""
    return lookup(read_config(path), host, path)


def default_auth_files(environ: Mapping[str, str], home: Path) -> list[Path]:
    """The files `copy` reads when none is named, as skopeo and podman read them: only
    `$REGISTRY_AUTH_FILE` when set; else `$XDG_RUNTIME_DIR/containers/auth.json`,
    `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config`), then docker's `config.json`
    (`$DOCKER_CONFIG` or `~/.docker`). Only files that exist."""
    if environ.get("REGISTRY_AUTH_FILE"):
        return [Path(environ["REGISTRY_AUTH_FILE"])]
    candidates = []
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else None
    candidates.append((config_home or home / ".config") / "containers" / "auth.json")
    docker = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else home / ".docker"
    candidates.append(docker / "config.json")
    return [path for path in candidates if path.is_file()]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size)


class DockerConfigCredentials:
    """A CredentialProvider over config files: the first file with something for the host.

    The answer (a credential helper's too) is cached until `refresh`; a temporary failure (a
    helper that timed out) is not. Two providers are equal when they read the same files, for
    the same host, unchanged since: a rewritten file makes a new provider that a reload or the
    next job switches to."""

    def __init__(self, files: Sequence[Path], host: str) -> None:
        self.files = tuple(files)
        self.host = host
        self._stamps = tuple(_stamp(path) for path in self.files)
        self._lock = asyncio.Lock()
        self._resolved = False
        self._outcome: Credentials | AuthError | None = None
        self._source = f"credentials for {host} from {', '.join(map(str, self.files))}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DockerConfigCredentials):
            return NotImplemented
        return (self.files, self.host, self._stamps) == (other.files, other.host, other._stamps)

    def __hash__(self) -> int:
        return hash((self.files, self.host, self._stamps))

    def __repr__(self) -> str:
        return f"DockerConfigCredentials({self.host!r}, files={[str(f) for f in self.files]})"

    @property
    def source(self) -> str:
        """The file and entry, or helper, the credentials came from."""
        return self._source

    def cached(self) -> bool:
        """Resolved, and no resolve (a helper's run) under way."""
        return self._resolved and not self._lock.locked()

    async def get(self, *, refresh: bool = False) -> Credentials | None:
        """The credentials for the host, resolved once (again on `refresh`)."""
        async with self._lock:
            if refresh or not self._resolved:
                try:
                    self._outcome = await self._resolve()
                except AuthError as exc:
                    self._outcome = exc
                self._resolved = not (
                    isinstance(self._outcome, AuthError) and self._outcome.temporary
                )
            outcome = self._outcome
        if isinstance(outcome, AuthError):
            # A fresh exception each time: re-raising one instance would grow its traceback.
            raise AuthError(outcome.message, temporary=outcome.temporary)
        return outcome

    async def _resolve(self) -> Credentials | None:
        for path in self.files:
            try:
                found = inspect(path, self.host)
            except ConfigError as exc:
                raise AuthError(str(exc), temporary=False) from exc
            if found is None:
                continue
            self._source = found.describe()
            if found.credentials is not None:
                return found.credentials
            assert found.helper is not None
            credentials = await helper_get(found.helper, server_url(self.host))
            if credentials is not None:
                return credentials
        return None


def home_auth_files() -> list[Path]:
    """default_auth_files() for this process's environment and home."""
    return default_auth_files(os.environ, Path.home())
