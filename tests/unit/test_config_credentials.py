"""Registry credentials in the daemon config: docker_config validated at load, described by
`config check`, and turned into credential providers for the client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicator.cli import main
from replicator.config.loading import load_config
from replicator.config.sites import credentials_of
from replicator.registry.credentials import Credentials, StaticCredentials
from replicator.registry.dockerconfig import DockerConfigCredentials
from tests.support.credential_helpers import CredentialHelper

HOST = "registry.example.com"
CONFIG = f"""
version = 1
[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "https://{HOST}"
docker_config = "docker.json"
"""


def _config(folder: Path, docker: str | object) -> Path:
    text = docker if isinstance(docker, str) else json.dumps(docker)
    (folder / "docker.json").write_text(text)
    path = folder / "replicator.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH for docker-credential-* executables."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


class TestConfigCheck:
    """`config check` on a registry's docker_config."""

    @pytest.mark.parametrize(
        ("docker", "message"),
        [("{not json", "not valid JSON"), ("[]", "is not a JSON object"),
         ({"auths": {"other.example.com": {"auth": "YTpi"}}}, f"has no credentials for {HOST}"),
         ({"auths": {HOST: {"auth": "!!"}}}, f"auths.{HOST}.auth: is not base64")],
        ids=["invalid-json", "array", "nothing-for-host", "bad-auth"],
    )  # fmt: skip
    def test_unusable_docker_config_exits_2(
        self, tmp_path: Path, docker: str | object, message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid or useless docker_config is a config error naming the field and file."""
        assert main(["config", "check", str(_config(tmp_path, docker))]) == 2
        err = capsys.readouterr().err
        assert "registries.use1.docker_config" in err
        assert message in err
        assert str(tmp_path / "docker.json") in err

    def test_helper_on_path(
        self, tmp_path: Path, helpers: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A helper-only docker_config is ok and says which helper will be asked."""
        CredentialHelper(helpers, "desktop")
        assert main(["config", "check", str(_config(tmp_path, {"credsStore": "desktop"}))]) == 0
        out, err = capsys.readouterr()
        assert "credentials: credential helper docker-credential-desktop (credsStore in" in out
        assert err == ""

    def test_helper_missing_is_warned(
        self, tmp_path: Path, helpers: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A helper that is not on PATH is a warning on stderr naming it and the registry."""
        del helpers  # an empty PATH folder: the helper is missing
        doc = {"credHelpers": {HOST: "ecr-login"}}
        assert main(["config", "check", "--json", str(_config(tmp_path, doc))]) == 0
        out, err = capsys.readouterr()
        (registry,) = json.loads(out)["registries"]
        assert registry["credentials"].startswith("credential helper docker-credential-ecr-login")
        assert "is not on PATH" in registry["credentials_warning"]
        assert "registries.use1.docker_config: docker-credential-ecr-login is not on PATH" in err


class TestProviders:
    """credentials_of(): what the client is given."""

    def test_password_file(self, tmp_path: Path) -> None:
        """username + password_file is a static provider, unequal once the file is rotated."""
        (tmp_path / "pw").write_text("one\n")
        text = CONFIG.replace(
            'docker_config = "docker.json"', 'username = "u"\npassword_file = "pw"'
        )
        path = tmp_path / "replicator.toml"
        path.write_text(text)
        first = credentials_of(load_config(path).registries["use1"])
        assert isinstance(first, StaticCredentials)
        assert first.credentials == Credentials("u", "one")
        (tmp_path / "pw").write_text("two\n")
        assert credentials_of(load_config(path).registries["use1"]) != first

    def test_docker_config(self, tmp_path: Path) -> None:
        """docker_config is read lazily by a DockerConfigCredentials over that one file."""
        path = _config(tmp_path, {"auths": {HOST: {"auth": "YTpi"}}})
        provider = credentials_of(load_config(path).registries["use1"])
        assert provider == DockerConfigCredentials([tmp_path / "docker.json"], HOST)
