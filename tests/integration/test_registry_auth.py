"""Credentials as docker and podman keep them, against a registry that really checks tokens.

The destination is docker-registry with `auth: token`, trusting only the token issuer of
tests/support/token_issuer.py (Docker token GET and OAuth2 POST); credential helpers are real
`docker-credential-*` executables on PATH speaking the helper protocol. `replicator copy` runs
as a subprocess with its own HOME and PATH, as a user would run it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.registry.client import pull_scope
from replicator.registry.credentials import Credentials, StaticCredentials
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings
from tests.support import skopeo
from tests.support.copy_cli import assert_tags_equal, copy_ok, run_copy
from tests.support.copy_corpus import CopyCorpus
from tests.support.credential_helpers import CredentialHelper
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry
from tests.support.token_issuer import TokenIssuer

pytestmark = pytest.mark.integration

USER, PASSWORD = "robot", "robot-pa55-1"
# What `docker login` to ACR writes beside an identity token: a zero UUID and no password.
ACR_USER = "00000000-0000-0000-0000-000000000000"
# Environment variables that would point the copy at the machine's own credential files.
_CREDENTIAL_ENV = ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")


class User:
    """A user's home folder (with ~/.docker/config.json) and a PATH with its helpers."""

    def __init__(self, folder: Path) -> None:
        self.home = folder / "home"
        self.bin = folder / "bin"
        (self.home / ".docker").mkdir(parents=True)
        self.bin.mkdir()

    def docker_config(self, doc: object) -> Path:
        """Write ~/.docker/config.json."""
        path = self.home / ".docker" / "config.json"
        path.write_text(json.dumps(doc))
        return path

    def helper(self, name: str) -> CredentialHelper:
        """Install docker-credential-NAME on this user's PATH."""
        return CredentialHelper(self.bin, name)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment `replicator copy` runs in."""
        env = {k: v for k, v in os.environ.items() if k not in _CREDENTIAL_ENV}
        return env | {"HOME": str(self.home), "PATH": f"{self.bin}:{os.environ['PATH']}"} | extra


@pytest.fixture
def user(tmp_path: Path) -> User:
    """A fresh home folder and PATH."""
    return User(tmp_path)


@pytest.fixture
def issuer(token_issuer: TokenIssuer) -> TokenIssuer:
    """The token issuer with one user who may push anywhere."""
    token_issuer.users[USER] = PASSWORD
    return token_issuer


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TestCredsStore:
    """A config.json whose credsStore cannot help never stops an anonymous copy."""

    @pytest.mark.parametrize("helper", ["knows-nothing", "absent", "failing"])
    def test_anonymous_copy_with_a_creds_store(
        self, user: User, copy_corpus: CopyCorpus, dst_registry: Registry, helper: str
    ) -> None:
        """`credsStore: desktop` (Docker Desktop's default) with a helper that knows nothing,
        is not installed, or fails: anonymous registries are copied all the same."""
        user.docker_config({"auths": {}, "credsStore": "desktop"})
        if helper == "knows-nothing":
            user.helper("desktop")
        elif helper == "failing":
            user.helper("desktop").set({}, fail="error getting credentials - keychain locked")
        image = copy_corpus.images["team/app"]["v1"]
        copy_ok(
            copy_corpus.ref("team/app", "v1"), f"{dst_registry.host}/team/app:v1", env=user.env()
        )
        assert_tags_equal(f"{dst_registry.host}/team/app", {"v1": image.digest})

    def test_missing_helper_named_where_credentials_are_needed(
        self, user: User, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """A registry that needs credentials fails with the missing helper named; the source,
        read anonymously, is not affected."""
        user.docker_config({"credsStore": "desktop"})
        run = run_copy(
            copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=user.env()
        )
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == ["AUTH_FAILED"], str(run)
        assert "docker-credential-desktop is not on PATH" in run.stderr, str(run)
        assert issuer.grants("get"), "the token was asked for anonymously first"


class TestCredHelpers:
    """credHelpers entries through the helper protocol, to a token-auth registry."""

    def test_copy_to_token_registry(
        self, user: User, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """A credHelpers entry for the destination: the helper is asked for its host, the
        token issuer sees the helper's user, and the registry accepts the pushed image."""
        helper = user.helper("team")
        helper.set({token_registry.host: (USER, PASSWORD)})
        user.docker_config({"credHelpers": {token_registry.host: "team"}, "credsStore": "none"})
        image = copy_corpus.images["team/app"]["v1"]
        copy_ok(
            copy_corpus.ref("team/app", "v1"),
            f"{token_registry.host}/team/app:v1",
            env=user.env(),
        )
        assert_tags_equal(
            f"{token_registry.host}/team/app", {"v1": image.digest}, creds=(USER, PASSWORD)
        )
        assert set(helper.calls) == {token_registry.host}
        assert {r.account for r in issuer.grants("get") if r.status == 200} == {USER}

    def test_rotated_helper_secret_used_after_refusal(
        self, user: User, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """The helper still holds an old password: refused once, it is asked again (as after
        a rotation by its source) and the copy goes through with the password it gives then."""
        helper = user.helper("team")
        helper.set({token_registry.host: (USER, "stale-password")})
        user.docker_config({"credHelpers": {token_registry.host: "team"}})
        issuer.users[USER] = PASSWORD
        script = helper.path.read_text()
        # The helper rotates at its first call: the second call answers the current password.
        helper.path.write_text(
            script.replace(
                'entry = spec["secrets"].get(server)',
                'entry = spec["secrets"].get(server)\n'
                f'spec["secrets"][server] = [{USER!r}, {PASSWORD!r}]\n'
                '(here / (name + ".json")).write_text(json.dumps(spec))',
            )
        )
        copy_ok(
            copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=user.env()
        )
        assert len(helper.calls) == 2


class TestIdentityTokens:
    """identitytoken entries: the OAuth2 refresh-token grant, as ACR and GAR logins store."""

    def test_post_grant(
        self, user: User, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """The identity token is exchanged by POST grant_type=refresh_token; no password is
        ever sent by GET."""
        refresh = issuer.offline_token(USER, PASSWORD)
        user.docker_config(
            {
                "auths": {
                    token_registry.host: {"auth": _b64(f"{ACR_USER}:"), "identitytoken": refresh}
                }
            }
        )
        copy_ok(
            copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=user.env()
        )
        posts = [r for r in issuer.grants("refresh_token") if r.status == 200]
        assert posts
        assert {r.account for r in posts} == {USER}
        assert not [r for r in issuer.grants("get") if r.account]
        assert (
            skopeo.digest_of(f"{token_registry.host}/team/app:v1", creds=(USER, PASSWORD))
            == copy_corpus.images["team/app"]["v1"].digest
        )

    def test_get_fallback_without_oauth(
        self, user: User, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """A token service without the POST endpoint (404) is asked by GET, the identity
        token as the Basic password."""
        refresh = issuer.offline_token(USER, PASSWORD)
        issuer.oauth = False
        user.docker_config({"auths": {token_registry.host: {"identitytoken": refresh}}})
        copy_ok(
            copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=user.env()
        )
        assert [r.status for r in issuer.requests if r.method == "POST"][-1] == 404
        assert {r.account for r in issuer.grants("get") if r.status == 200} == {USER}

    @pytest.mark.parametrize("refusal", ["no-oauth-404", "unsupported-grant-400"])
    def test_unsupported_refresh_grant_is_asked_once(
        self,
        user: User,
        copy_corpus: CopyCorpus,
        issuer: TokenIssuer,
        token_registry: Registry,
        refusal: str,
    ) -> None:
        """A token service that has no refresh-token grant (no POST endpoint, or 400
        unsupported_grant_type) is asked for it once: every later token of the copy (one per
        scope) is fetched by GET straight away, the identity token as the Basic password."""
        refresh = issuer.offline_token(USER, PASSWORD)
        if refusal == "no-oauth-404":
            issuer.oauth = False
        else:
            issuer.refresh_grant = False
        user.docker_config({"auths": {token_registry.host: {"identitytoken": refresh}}})
        before = len(issuer.requests)
        copy_ok(
            copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=user.env()
        )
        asked = issuer.requests[before:]
        gets = [r for r in asked if r.method == "GET" and r.account == USER and r.status == 200]
        assert len([r for r in asked if r.method == "POST"]) == 1
        assert gets


class TestPodmanAuthFiles:
    """podman's auth.json, where skopeo and podman read it."""

    @pytest.mark.parametrize("where", ["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"])
    def test_auth_json(
        self,
        user: User,
        copy_corpus: CopyCorpus,
        issuer: TokenIssuer,
        token_registry: Registry,
        where: str,
        tmp_path: Path,
    ) -> None:
        """$REGISTRY_AUTH_FILE, or $XDG_RUNTIME_DIR/containers/auth.json, gives the credentials."""
        del issuer  # its user is what the auth.json names
        runtime = tmp_path / "run"
        (runtime / "containers").mkdir(parents=True)
        path = runtime / "containers" / "auth.json"
        path.write_text(
            json.dumps({"auths": {token_registry.host: {"auth": _b64(f"{USER}:{PASSWORD}")}}})
        )
        env = (
            user.env(REGISTRY_AUTH_FILE=str(path))
            if where == "REGISTRY_AUTH_FILE"
            else user.env(XDG_RUNTIME_DIR=str(runtime))
        )
        copy_ok(copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1", env=env)


def _push_with_creds(
    copy_corpus: CopyCorpus, registry: Registry, repository: str = "team/app"
) -> None:
    skopeo.run_skopeo(
        [
            "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false",
            "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
            f"docker://{copy_corpus.ref('team/app', 'v1')}",
            f"docker://{registry.host}/{repository}:v1",
        ]
    )  # fmt: skip


class TestTokenRenewal:
    """A token is renewed before it expires, and at once when the registry refuses it."""

    async def test_new_token_before_expiry(
        self, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """A token about to expire is not sent: the next request fetches a new one."""
        _push_with_creds(copy_corpus, token_registry)
        # 11 s: the client keeps a token until 10 s before its expiry, so 1 s here.
        issuer.lifetime = 11
        before = len(issuer.grants("get"))
        async with ClientPool() as pool:
            client = pool.client(_settings(token_registry))
            await client.request("GET", TAGS, scope=pull_scope("team/app"))
            await client.request("GET", TAGS, scope=pull_scope("team/app"))
            assert len(issuer.grants("get")) == before + 1
            await asyncio.sleep(1.2)
            await client.request("GET", TAGS, scope=pull_scope("team/app"))
        assert len(issuer.grants("get")) == before + 2

    async def test_new_token_on_401(
        self, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """A cached token the registry no longer accepts (its trusted key changed) is replaced
        on the 401, and the request succeeds."""
        _push_with_creds(copy_corpus, token_registry)
        async with ClientPool() as pool:
            client = pool.client(_settings(token_registry))
            await client.request("GET", TAGS, scope=pull_scope("team/app"))
            issuer.rotate_key()
            token_registry.restart()
            before = len(issuer.grants("get"))
            response = await client.request("GET", TAGS, scope=pull_scope("team/app"))
        assert response.json()["tags"] == ["v1"]
        assert len(issuer.grants("get")) == before + 1


@pytest.fixture
def foreign_realm_registry(
    registry_factory: RegistryFactory, copy_corpus: CopyCorpus, issuer: TokenIssuer
) -> Iterator[Registry]:
    """A token registry whose realm is on another host than the registry (`localhost` for the
    registry's 127.0.0.1, as registry.gitlab.com sends clients to gitlab.com), holding the
    public team/app:v1 and the private team/private:v1."""
    auth = issuer.registry_auth()
    auth["token"]["realm"] = issuer.realm.replace("127.0.0.1", "localhost")
    registry = registry_factory(token_auth=auth)
    issuer.public.add("team/app")
    for repository in ("team/app", "team/private"):
        _push_with_creds(copy_corpus, registry, repository)
    yield registry
    registry.cleanup()


class TestForeignRealm:
    """A token service on another host gets no credentials unless named, and still gives
    anonymous tokens for public images (registry.gitlab.com, nvcr.io, registry.redhat.io)."""

    def test_public_image_through_another_hosts_realm(
        self,
        foreign_realm_registry: Registry,
        dst_registry: Registry,
        issuer: TokenIssuer,
        user: User,
    ) -> None:
        """A public image is copied with a token asked anonymously of a realm on another
        host, even with credentials configured: they are not sent there."""
        before = len(issuer.requests)
        copy_ok(
            f"{foreign_realm_registry.host}/team/app:v1", f"{dst_registry.host}/team/app:v1",
            "--src-creds", f"{USER}:{PASSWORD}", env=user.env(),
        )  # fmt: skip
        asked = issuer.requests[before:]
        assert asked, "no token was asked for"
        assert {r.account for r in asked} == {""}, asked

    def test_private_image_names_the_flag_and_key(
        self, foreign_realm_registry: Registry, dst_registry: Registry, user: User
    ) -> None:
        """A private image behind another host's realm fails saying the credentials were not
        sent there, where they came from, and the flag and config key that send them."""
        run = run_copy(
            f"{foreign_realm_registry.host}/team/private:v1",
            f"{dst_registry.host}/team/private:v1",
            "--src-creds", f"{USER}:{PASSWORD}", env=user.env(),
        )  # fmt: skip
        assert run.exit_code == 1, str(run)
        reason = run.summary["failures"][0]["reason"]
        for named in (foreign_realm_registry.host, "localhost", "--src-creds",
                      "--src-token-realm", "token_realms"):  # fmt: skip
            assert named in reason, reason

    def test_named_realm_gets_the_credentials(
        self,
        foreign_realm_registry: Registry,
        dst_registry: Registry,
        issuer: TokenIssuer,
        user: User,
    ) -> None:
        """Named with --src-token-realm, the realm gets the credentials and the private image
        is copied."""
        realm = issuer.realm.replace("127.0.0.1", "localhost")
        before = len(issuer.requests)
        copy_ok(
            f"{foreign_realm_registry.host}/team/private:v1",
            f"{dst_registry.host}/team/private:v1",
            "--src-creds", f"{USER}:{PASSWORD}", "--src-token-realm", realm, env=user.env(),
        )  # fmt: skip
        assert USER in {r.account for r in issuer.requests[before:]}


class TestRefusalMessages:
    """An auth failure names the registry, where the credentials came from, and what fixes it."""

    @pytest.mark.parametrize(
        ("args", "named"),
        [
            pytest.param(["--dest-creds", f"{USER}:wrong"],
                         ["refused the credentials", "--dest-creds", "correct them"],
                         id="wrong-password"),
            pytest.param([], ["no credentials are configured", "--dest-creds", "password_file"],
                         id="no-credentials"),
        ],
    )  # fmt: skip
    def test_refusal_says_what_to_do(
        self,
        copy_corpus: CopyCorpus,
        issuer: TokenIssuer,
        token_registry: Registry,
        user: User,
        args: list[str],
        named: list[str],
    ) -> None:
        """A wrong password names the flag it came from; no credentials at all names the
        flags and config keys that give them; both name the registry."""
        run = run_copy(copy_corpus.ref("team/app", "v1"), f"{token_registry.host}/team/app:v1",
                       *args, env=user.env())  # fmt: skip
        assert run.exit_code == 1, str(run)
        reason = run.summary["failures"][0]["reason"]
        for text in [token_registry.host, *named]:
            assert text in reason, reason


class TestSingleFlight:
    """One token request per (realm, scope) in flight, whatever the number of waiters."""

    async def test_concurrent_first_requests_share_one_token_request(
        self, copy_corpus: CopyCorpus, issuer: TokenIssuer, token_registry: Registry
    ) -> None:
        """Eight requests of one scope that all meet the registry's 401 at once (a copy's
        first HEADs) fetch one token between them, not eight: Docker Hub and GHCR rate-limit
        their token endpoints."""
        _push_with_creds(copy_corpus, token_registry)
        before = len(issuer.grants("get"))
        async with ClientPool() as pool:
            client = pool.client(_settings(token_registry))
            answers = await asyncio.gather(*(
                client.request("GET", TAGS, scope=pull_scope("team/app"))
                for _ in range(CONCURRENT_REQUESTS)
            ))  # fmt: skip
        assert [a.json()["tags"] for a in answers] == [["v1"]] * CONCURRENT_REQUESTS
        assert len(issuer.grants("get")) == before + 1, issuer.grants("get")[before:]


TAGS = "/v2/team/app/tags/list"
# Requests at once in the single-flight test: what a copy's first HEADs of an image make.
CONCURRENT_REQUESTS = 8


def _settings(registry: Registry) -> RegistrySettings:
    return RegistrySettings(
        host=registry.host, credentials=StaticCredentials(Credentials(USER, PASSWORD))
    )
