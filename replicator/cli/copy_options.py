"""`copy`'s registry options, in skopeo's spellings, and where its credentials come from.

Per side (`src`, `dest`; `dst` is accepted for `dest`), the first of these that is given:
    --SIDE-no-creds                 anonymous, whatever else is configured (skopeo)
    --SIDE-creds USER:PASS          on the command line (visible in `ps`: prefer the others)
    --SIDE-creds-file FILE          a file holding USER:PASS (a mounted secret)
    --SIDE-username U with --SIDE-password P or --SIDE-password-stdin
    $REPLICATOR_SRC_CREDS / $REPLICATOR_DEST_CREDS holding USER:PASS
    --SIDE-authfile / --authfile / the default auth files (Docker, podman), asked lazily
TLS per side: --SIDE-ca-file PEM, or skopeo's --SIDE-cert-dir DIR; --SIDE-tls-verify.
A token realm on another host gets the credentials only when named: --SIDE-token-realm URL.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from replicator.cli.parsing import OptionalBool
from replicator.errors import UsageError
from replicator.registry.credentials import CredentialProvider, Credentials, StaticCredentials
from replicator.registry.dockerconfig import DockerConfigCredentials, home_auth_files

SIDES = ("src", "dst")
# How each side is spelled on the command line: skopeo says `dest`, our first flags said `dst`.
SPELLINGS = {"src": ("src",), "dst": ("dest", "dst")}
ENV_CREDS = {"src": "REPLICATOR_SRC_CREDS", "dst": "REPLICATOR_DEST_CREDS"}
WHAT = {"src": "SRC", "dst": "DST"}
# The end of `copy --help`: where credentials come from, in the order they are looked for.
CREDENTIALS_EPILOG = f"""\
credentials, per side, the first given:
  --src-no-creds / --dest-no-creds      anonymous
  --src-creds / --dest-creds USER:PASS  (visible in `ps`: prefer the ones below)
  --src-creds-file / --dest-creds-file FILE holding USER:PASS
  --src-username U with --src-password P or --src-password-stdin (--dest-* alike)
  ${ENV_CREDS["src"]} / ${ENV_CREDS["dst"]} holding USER:PASS
  --src-authfile / --dest-authfile / --authfile, else $REGISTRY_AUTH_FILE, podman's and
  Docker's auth files (credential helpers included)"""


# Each side's options: the flag's suffix, the argument's name after `SIDE_`, its argparse
# options, and its help (`{what}`: SRC or DST, `{side}`: the side's first spelling).
SIDE_OPTIONS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("creds", "creds", {"metavar": "USER:PASS"},
     "credentials for {what} (visible to other users in `ps`; prefer a file)"),
    ("creds-file", "creds_file", {"metavar": "FILE"}, "a file holding USER:PASS for {what}"),
    ("username", "username", {"metavar": "USER"},
     "user name for {what}, with --{side}-password(-stdin)"),
    ("password", "password", {"metavar": "PASS"}, "password for {what} (visible in `ps`)"),
    ("password-stdin", "password_stdin", {"action": "store_true"},
     "read {what}'s password from standard input (one line)"),
    ("no-creds", "no_creds", {"action": "store_true"}, "access {what} anonymously"),
    ("authfile", "authfile", {"metavar": "FILE"},
     "auth file for {what} only (default: --authfile)"),
    ("ca-file", "ca_file", {"metavar": "PEM"}, "CA bundle to verify {what}"),
    ("cert-dir", "cert_dir", {"metavar": "DIR"},
     "skopeo's certificate folder for {what}: *.crt CAs, a *.cert/*.key client pair"),
    ("token-realm", "token_realms", {"metavar": "URL", "action": "append", "default": []},
     "a token service on another host than {what} that may have its credentials (repeatable); "
     "without it such a realm is asked for tokens anonymously"),
    ("tls-verify", "tls_verify", {"action": OptionalBool},
     "verify {what}'s certificate: bare or =true (default), =false"),
)  # fmt: skip


def _flags(side: str, suffix: str) -> list[str]:
    return [f"--{spelling}-{suffix}" for spelling in SPELLINGS[side]]


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    """TLS, certificate and credential options for both sides, and the shared authfile."""
    parser.add_argument(
        "--authfile",
        metavar="FILE",
        help="Docker config.json or podman auth.json: `auths`, `credHelpers`, `credsStore` "
        "(default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json, "
        "~/.config/containers/auth.json and $DOCKER_CONFIG/config.json or "
        "~/.docker/config.json, those present)",
    )
    for side in SIDES:
        what, first = WHAT[side], SPELLINGS[side][0]
        for suffix, dest, options, text in SIDE_OPTIONS:
            parser.add_argument(
                *_flags(side, suffix),
                dest=f"{side}_{dest}",
                help=text.format(what=what, side=first),
                **options,
            )
    parser.add_argument(
        "--all", action="store_true",
        help="accepted for skopeo: every platform of an index is always copied",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class SideCredentials:
    """What was resolved for one side before any registry is contacted."""

    explicit: Credentials | None  # from flags, a file, stdin or the environment
    anonymous: bool
    authfiles: tuple[Path, ...]
    origin: str

    def provider(self, host: str) -> CredentialProvider | None:
        """The provider for `host` (auth files are read only when the registry asks)."""
        if self.anonymous:
            return None
        if self.explicit is not None:
            return StaticCredentials(self.explicit, source=self.origin)
        if self.authfiles:
            return DockerConfigCredentials(list(self.authfiles), host)
        return None


def resolve(
    args: argparse.Namespace, environ: dict[str, str] | None = None, stdin: TextIO | None = None
) -> dict[str, SideCredentials]:
    """Each side's credentials from the arguments, the environment and standard input."""
    environ = dict(os.environ) if environ is None else environ
    stdin = stdin or sys.stdin
    readers = [side for side in SIDES if getattr(args, f"{side}_password_stdin")]
    if len(readers) > 1:
        raise UsageError("only one side can read its password from standard input")
    shared = _authfiles(args.authfile, "--authfile")
    return {side: _side(args, side, environ, stdin, shared) for side in SIDES}


def _side(
    args: argparse.Namespace,
    side: str,
    environ: dict[str, str],
    stdin: TextIO,
    shared: list[Path],
) -> SideCredentials:
    flag = f"--{SPELLINGS[side][0]}"
    value = {name: getattr(args, f"{side}_{name}") for name in (
        "creds", "creds_file", "username", "password", "password_stdin", "no_creds", "authfile",
    )}  # fmt: skip
    own = _authfiles(value["authfile"], f"{flag}-authfile")
    authfiles = tuple(own or shared)
    given = [n for n in ("creds", "creds_file", "password", "password_stdin") if value[n]]
    if value["no_creds"]:
        if given or value["username"]:
            raise UsageError(f"{flag}-no-creds cannot be combined with other {flag}-* credentials")
        return SideCredentials(None, True, (), f"{flag}-no-creds")
    if len(given) > 1:
        names = ", ".join(f"{flag}-{n.replace('_', '-')}" for n in given)
        raise UsageError(f"give one of {names}")
    if value["creds"]:
        return SideCredentials(_pair(value["creds"], f"{flag}-creds"), False, (), f"{flag}-creds")
    if value["creds_file"]:
        text = _read(value["creds_file"], f"{flag}-creds-file")
        return SideCredentials(_pair(text, f"{flag}-creds-file"), False, (), f"{flag}-creds-file")
    if value["password"] or value["password_stdin"]:
        if not value["username"]:
            raise UsageError(f"a password needs {flag}-username")
        password = value["password"] or stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError(f"{flag}-password-stdin: standard input gave no password")
        return SideCredentials(
            Credentials(value["username"], password), False, (), f"{flag}-password"
        )
    if value["username"]:
        raise UsageError(f"{flag}-username needs {flag}-password or {flag}-password-stdin")
    env = environ.get(ENV_CREDS[side])
    if env:
        return SideCredentials(_pair(env, f"${ENV_CREDS[side]}"), False, (), ENV_CREDS[side])
    return SideCredentials(None, False, authfiles, "auth files")


def _pair(text: str, where: str) -> Credentials:
    user, sep, password = text.strip().partition(":")
    if not sep or not user:
        raise UsageError(f"{where}: credentials must be USER:PASS")
    return Credentials(user, password)


def _read(path: str, where: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{where} {path}: {exc.strerror or exc}") from exc


def _authfiles(explicit: str | None, where: str) -> list[Path]:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"{where} {explicit}: no such file")
        return [path]
    return [] if where != "--authfile" else home_auth_files()


@dataclass(frozen=True, slots=True)
class SideTls:
    """A side's CA bundle (a file path) and client certificate pair, if any."""

    ca_file: str | None
    cert: tuple[str, str] | None


def tls_of(args: argparse.Namespace, side: str) -> SideTls:
    """--SIDE-ca-file, or what --SIDE-cert-dir holds (containers-certs.d(5): `*.crt` are CA
    certificates, `NAME.cert` with `NAME.key` a client certificate and its key)."""
    flag = f"--{SPELLINGS[side][0]}"
    ca_file: str | None = getattr(args, f"{side}_ca_file")
    folder: str | None = getattr(args, f"{side}_cert_dir")
    if folder is None:
        return SideTls(ca_file, None)
    if ca_file is not None:
        raise UsageError(f"give {flag}-ca-file or {flag}-cert-dir, not both")
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{flag}-cert-dir {folder}: no such folder")
    cas = sorted(path.glob("*.crt"))
    pairs = []
    for cert in sorted(path.glob("*.cert")):
        key = cert.with_suffix(".key")
        if not key.is_file():
            raise UsageError(f"{flag}-cert-dir: {cert.name} has no {key.name} beside it")
        pairs.append((str(cert), str(key)))
    if len(pairs) > 1:
        raise UsageError(f"{flag}-cert-dir: more than one client certificate (*.cert)")
    return SideTls(_bundle(cas) if cas else None, pairs[0] if pairs else None)


def _bundle(cas: list[Path]) -> str:
    """One CA file for several `*.crt`: the first as it is, else their concatenation in a
    temporary file removed when the process exits."""
    if len(cas) == 1:
        return str(cas[0])
    handle, name = tempfile.mkstemp(prefix="replicator-ca-", suffix=".pem")
    with os.fdopen(handle, "wb") as out:
        for ca in cas:
            out.write(ca.read_bytes().rstrip(b"\n") + b"\n")
    atexit.register(Path(name).unlink, missing_ok=True)
    return name
