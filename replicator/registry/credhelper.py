"""Docker credential helpers: `docker-credential-<name> get`, the protocol docker and podman use.

The server URL goes on stdin; the helper answers `{"ServerURL", "Username", "Secret"}` on stdout
and exits 0, or prints an error and exits non-zero. "credentials not found" (the message of
docker-credential-helpers' ErrCredentialsNotFound) means the helper knows nothing of this
registry: anonymous, not an error. A `Username` of `<token>` means the Secret is an identity
token (an OAuth2 refresh token), as docker stores them.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil

from replicator.errors import AuthError
from replicator.registry.credentials import Credentials

HELPER_PREFIX = "docker-credential-"
# A helper may wait on a keychain or call a cloud API (ecr-login, gcloud); longer than this is
# hung. A request that needs the credentials waits this long at most.
HELPER_TIMEOUT_SECONDS = 30.0
# A helper's answer is a few hundred bytes; what is beyond this is not read into messages.
MAX_MESSAGE_CHARS = 200
# The helper name becomes a file name on PATH: no path separators, nothing a shell would read.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_NOT_FOUND = "credentials not found"
# The Username docker writes when the Secret is an identity token (not a password itself).
TOKEN_USERNAME = "<token>"  # noqa: S105 - a marker, not a secret


def helper_executable(name: str) -> str:
    """`docker-credential-<name>` checked for a safe name."""
    if not _NAME_RE.match(name):
        raise AuthError(
            f"credential helper name {name[:40]!r} is not valid", status=None, temporary=False
        )
    return HELPER_PREFIX + name


def helper_path(name: str) -> str | None:
    """Where `docker-credential-<name>` is on PATH, or None."""
    return shutil.which(helper_executable(name))


async def helper_get(name: str, server_url: str) -> Credentials | None:
    """Ask helper `name` for `server_url`'s credentials; None when it has none."""
    executable = helper_executable(name)
    path = shutil.which(executable)
    if path is None:
        raise AuthError(f"credential helper {executable} is not on PATH", temporary=False)
    try:
        process = await asyncio.create_subprocess_exec(
            path,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise AuthError(
            f"credential helper {executable} cannot be run: {exc.strerror}", temporary=False
        ) from exc
    try:
        # The helper is an executable the operator installed, not a network peer: its whole
        # (small) answer is read, then only a capped part ever reaches a message.
        async with asyncio.timeout(HELPER_TIMEOUT_SECONDS):
            out, err = await process.communicate(server_url.encode())
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise AuthError(
            f"credential helper {executable} gave no answer in {HELPER_TIMEOUT_SECONDS:.0f} s",
            temporary=True,
        ) from exc
    if process.returncode != 0:
        # docker-credential-helpers print their error on stdout; others use stderr.
        message = (out or err).decode(errors="replace").strip()
        if _NOT_FOUND in message.lower():
            return None
        raise AuthError(
            f"credential helper {executable} failed (exit {process.returncode}): "
            f"{message[:MAX_MESSAGE_CHARS] or 'no message'}",
            temporary=False,
        )
    return _parse_answer(executable, out)


def _parse_answer(executable: str, out: bytes) -> Credentials | None:
    try:
        doc = json.loads(out)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise AuthError(
            f"credential helper {executable} answered something that is not JSON",
            temporary=False,
        ) from exc
    username = doc.get("Username") if isinstance(doc, dict) else None
    secret = doc.get("Secret") if isinstance(doc, dict) else None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise AuthError(
            f"credential helper {executable} answered without Username and Secret strings",
            temporary=False,
        )
    if not username and not secret:
        return None  # some helpers answer empty credentials rather than "not found"
    if username == TOKEN_USERNAME:
        return Credentials(username, "", identity_token=secret)
    return Credentials(username, secret)
