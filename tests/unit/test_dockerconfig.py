"""Docker config.json / podman auth.json credentials and credential helpers
(registry/dockerconfig.py, registry/credhelper.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from replicator.errors import AuthError, ConfigError
from replicator.registry.credentials import Credentials
from replicator.registry.dockerconfig import (
    DOCKER_HUB_KEY,
    DockerConfigCredentials,
    default_auth_files,
    inspect,
)
from tests.support.credential_helpers import CredentialHelper

HOST = "registry.example.com:5000"
SECRET = "s3cr3t-pa55"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write(tmp_path: Path, doc: object, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


async def _get(path: Path, host: str = HOST) -> Credentials | None:
    return await DockerConfigCredentials([path], host).get()


VALID_CONFIGS = [
    ("auth", {"auths": {HOST: {"auth": _b64(f"alice:{SECRET}")}}}, Credentials("alice", SECRET)),
    ("auth-colon-in-password", {"auths": {HOST: {"auth": _b64("alice:a:b")}}},
     Credentials("alice", "a:b")),
    ("auth-empty-password", {"auths": {HOST: {"auth": _b64("alice:")}}},
     Credentials("alice", "")),
    ("username-password", {"auths": {HOST: {"username": "bob", "password": SECRET}}},
     Credentials("bob", SECRET)),
    ("https-key", {"auths": {f"https://{HOST}": {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("http-key", {"auths": {f"http://{HOST}": {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("v2-url-key", {"auths": {f"https://{HOST}/v2/": {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
    ("bare-key-wins", {"auths": {f"https://{HOST}": {"auth": _b64("x:y")},
                                 HOST: {"auth": _b64("c:d")}}}, Credentials("c", "d")),
    ("inline-beats-store", {"credsStore": "desktop", "auths": {HOST: {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
    ("empty-entry-falls-through", {"auths": {HOST: {}, f"https://{HOST}": {"auth": _b64("c:d")}}},
     Credentials("c", "d")),
    ("identity-token-acr", {"auths": {HOST: {
        "auth": _b64("00000000-0000-0000-0000-000000000000:"), "identitytoken": "rt"}}},
     Credentials("00000000-0000-0000-0000-000000000000", "", identity_token="rt")),
    ("identity-token-alone", {"auths": {HOST: {"identitytoken": "rt"}}},
     Credentials("<token>", "", identity_token="rt")),
]  # fmt: skip


class TestInlineEntries:
    """`auths` entries, matched under every key docker and podman write."""

    @pytest.mark.parametrize(
        ("doc", "expected"),
        [case[1:] for case in VALID_CONFIGS],
        ids=[case[0] for case in VALID_CONFIGS],
    )
    async def test_credentials(self, tmp_path: Path, doc: object, expected: Credentials) -> None:
        """Inline credentials for the host are found under any of the keys Docker writes."""
        assert await _get(_write(tmp_path, doc)) == expected

    @pytest.mark.parametrize(
        "doc",
        [{"auths": {"other.example.com": {"auth": _b64("a:b")}}}, {"auths": {}}, {},
         {"auths": {HOST: "not-an-object"}}, {"auths": {f"{HOST}/team": {"auth": _b64("a:b")}}},
         {"auths": {f"{HOST}0": {"auth": _b64("a:b")}}}],
        ids=["other-host", "empty-auths", "empty-object", "entry-not-object", "namespace-key",
             "longer-port"],
    )  # fmt: skip
    async def test_no_credentials(self, tmp_path: Path, doc: object) -> None:
        """A config without anything for the host gives None (anonymous)."""
        assert await _get(_write(tmp_path, doc)) is None

    @pytest.mark.parametrize("host", ["docker.io", "index.docker.io", "registry-1.docker.io"])
    @pytest.mark.parametrize("key", [DOCKER_HUB_KEY, "docker.io", "index.docker.io"])
    async def test_docker_hub_keys(self, tmp_path: Path, host: str, key: str) -> None:
        """Docker Hub's entry is found under docker's and podman's keys for any of its names."""
        doc = {"auths": {key: {"auth": _b64("hubuser:pw")}}}
        assert await _get(_write(tmp_path, doc), host) == Credentials("hubuser", "pw")

    @pytest.mark.parametrize(
        "auth",
        ["not base64!", "YWxpY2U", _b64("no-colon"), _b64(":only-password"),
         base64.b64encode(b"\xff\xfe:x").decode(), 42, [SECRET]],
        ids=["not-base64", "bad-padding", "no-colon", "empty-user", "not-utf8", "number", "list"],
    )  # fmt: skip
    def test_bad_auth_field(self, tmp_path: Path, auth: object) -> None:
        """A malformed `auth` value is a ConfigError naming the field, never showing the value."""
        path = _write(tmp_path, {"auths": {HOST: {"auth": auth}}})
        with pytest.raises(ConfigError) as info:
            inspect(path, HOST)
        assert info.value.field == f"auths.{HOST}.auth"
        if isinstance(auth, str):
            assert auth not in str(info.value)

    @pytest.mark.parametrize("section", ["auths", "credHelpers"])
    def test_section_not_object(self, tmp_path: Path, section: str) -> None:
        """`auths` or `credHelpers` that is not an object is a ConfigError naming the field."""
        with pytest.raises(ConfigError) as info:
            inspect(_write(tmp_path, {section: ["x"]}), HOST)
        assert info.value.field == section

    @pytest.mark.parametrize(
        ("content", "message"),
        [(b"{not json", "not valid JSON"), (b"\xff\xfe\x00garbage", "not valid JSON"),
         (b"[]", "not a JSON object"), (b"null", "not a JSON object")],
        ids=["bad-json", "not-utf8", "array", "null"],
    )  # fmt: skip
    def test_unusable_file(self, tmp_path: Path, content: bytes, message: str) -> None:
        """A file that is not a JSON object is a ConfigError naming the file."""
        path = tmp_path / "config.json"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=message) as info:
            inspect(path, HOST)
        assert info.value.file == str(path)

    async def test_unusable_file_at_run_time(self, tmp_path: Path) -> None:
        """At run time an unusable file is a permanent AuthError naming the file."""
        path = tmp_path / "config.json"
        path.write_text("{")
        with pytest.raises(AuthError, match="not valid JSON") as info:
            await _get(path)
        assert not info.value.temporary
        assert str(path) in str(info.value)


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH for docker-credential-* executables."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


class TestCredentialHelpers:
    """credHelpers and credsStore, through the helper protocol."""

    async def test_cred_helpers_entry(self, tmp_path: Path, helpers: Path) -> None:
        """A credHelpers entry asks that helper for the host; it wins over an inline entry."""
        helper = CredentialHelper(helpers, "team")
        helper.set({HOST: ("robot", SECRET)})
        doc = {"credHelpers": {HOST: "team"}, "auths": {HOST: {"auth": _b64("x:y")}}}
        provider = DockerConfigCredentials([_write(tmp_path, doc)], HOST)
        assert await provider.get() == Credentials("robot", SECRET)
        assert helper.calls == [HOST]
        assert "docker-credential-team" in provider.source

    async def test_answer_cached_until_refresh(self, tmp_path: Path, helpers: Path) -> None:
        """The helper is run once; a refresh runs it again and sees a rotated secret."""
        helper = CredentialHelper(helpers, "store")
        helper.set({HOST: ("u", "one")})
        provider = DockerConfigCredentials([_write(tmp_path, {"credsStore": "store"})], HOST)
        assert await provider.get() == Credentials("u", "one")
        helper.set({HOST: ("u", "two")})
        assert await provider.get() == Credentials("u", "one")
        assert await provider.get(refresh=True) == Credentials("u", "two")
        assert len(helper.calls) == 2

    async def test_docker_hub_server_url(self, tmp_path: Path, helpers: Path) -> None:
        """Docker Hub's helper is asked for https://index.docker.io/v1/, as docker asks."""
        helper = CredentialHelper(helpers, "desktop")
        helper.set({DOCKER_HUB_KEY: ("hubuser", "pat")})
        path = _write(tmp_path, {"credsStore": "desktop"})
        assert await _get(path, "docker.io") == Credentials("hubuser", "pat")
        assert helper.calls == [DOCKER_HUB_KEY]

    async def test_not_found_is_anonymous(self, tmp_path: Path, helpers: Path) -> None:
        """ "credentials not found" from the helper means anonymous, not an error."""
        CredentialHelper(helpers, "desktop")
        assert await _get(_write(tmp_path, {"credsStore": "desktop"})) is None

    async def test_token_username_is_an_identity_token(self, tmp_path: Path, helpers: Path) -> None:
        """A helper answering Username `<token>` gives an identity token, not a password."""
        CredentialHelper(helpers, "acr").set({HOST: ("<token>", "refresh")})
        creds = await _get(_write(tmp_path, {"credHelpers": {HOST: "acr"}}))
        assert creds == Credentials("<token>", "", identity_token="refresh")

    async def test_missing_helper(self, tmp_path: Path, helpers: Path) -> None:
        """A helper that is not on PATH is a permanent AuthError naming it."""
        with pytest.raises(AuthError, match="docker-credential-desktop is not on PATH") as info:
            await _get(_write(tmp_path, {"credsStore": "desktop"}))
        assert not info.value.temporary

    async def test_failing_helper(self, tmp_path: Path, helpers: Path) -> None:
        """A helper exiting non-zero is an AuthError with its message."""
        CredentialHelper(helpers, "desktop").set({}, fail="keychain is locked")
        with pytest.raises(AuthError, match="desktop failed \\(exit 1\\): keychain is locked"):
            await _get(_write(tmp_path, {"credsStore": "desktop"}))

    @pytest.mark.parametrize(
        ("answer", "message"),
        [("not json", "not JSON"), ('{"Username": 1, "Secret": "x"}', "without Username"),
         ("[]", "without Username")],
        ids=["not-json", "number-user", "array"],
    )  # fmt: skip
    async def test_bad_answers(
        self, tmp_path: Path, helpers: Path, answer: str, message: str
    ) -> None:
        """A helper answering something other than the protocol's JSON is an AuthError."""
        script = helpers / "docker-credential-odd"
        script.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{answer}'\n")
        script.chmod(0o755)
        with pytest.raises(AuthError, match=message):
            await _get(_write(tmp_path, {"credsStore": "odd"}))

    @pytest.mark.parametrize("name", ["../evil", "a/b", "", "-x"])
    async def test_unsafe_helper_name(self, tmp_path: Path, name: str) -> None:
        """A helper name that is not a plain word is refused, never run."""
        doc = {"credHelpers": {HOST: name}} if name else {"credsStore": "/bin/x"}
        with pytest.raises(AuthError, match="not valid"):
            await _get(_write(tmp_path, doc))


class TestFiles:
    """Which files are read, and when a provider counts as changed."""

    def test_registry_auth_file_alone(self, tmp_path: Path) -> None:
        """$REGISTRY_AUTH_FILE, when set, is the only file (as podman and skopeo)."""
        env = {"REGISTRY_AUTH_FILE": str(tmp_path / "x.json"), "XDG_RUNTIME_DIR": str(tmp_path)}
        assert default_auth_files(env, tmp_path) == [tmp_path / "x.json"]

    def test_order_and_presence(self, tmp_path: Path) -> None:
        """podman's auth.json files come before docker's config.json; absent files are left out."""
        runtime = _write(_mkdir(tmp_path / "run" / "containers"), {}, "auth.json")
        docker = _write(_mkdir(tmp_path / "home" / ".docker"), {})
        env = {"XDG_RUNTIME_DIR": str(tmp_path / "run")}
        assert default_auth_files(env, tmp_path / "home") == [runtime, docker]

    async def test_first_file_with_an_answer_wins(self, tmp_path: Path) -> None:
        """A file with nothing for the host is passed over for the next one."""
        first = _write(tmp_path, {"auths": {"other": {"auth": _b64("a:b")}}}, "auth.json")
        second = _write(tmp_path, {"auths": {HOST: {"auth": _b64("c:d")}}})
        assert await DockerConfigCredentials([first, second], HOST).get() == Credentials("c", "d")

    def test_equality_follows_the_file(self, tmp_path: Path) -> None:
        """Providers over an unchanged file are equal; a rewritten file makes them differ."""
        path = _write(tmp_path, {"auths": {HOST: {"auth": _b64("a:b")}}})
        before = DockerConfigCredentials([path], HOST)
        assert before == DockerConfigCredentials([path], HOST)
        path.write_text(json.dumps({"auths": {HOST: {"auth": _b64("a:rotated")}}}))
        assert before != DockerConfigCredentials([path], HOST)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
