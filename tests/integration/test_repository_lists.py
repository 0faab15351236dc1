"""Repositories named where a source has no catalog: `repositories = [...]` in the config,
`--repository` and `--repositories-from` on the command line, for backfill, verify and copy -r.

The source is a real registry behind a fault proxy that answers 404 to /v2/_catalog for ever,
as registries without a catalog (Docker Hub, GHCR, ECR) do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.copy_cli import run_copy
from tests.support.daemon import replicator_cli, rule
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.images import LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

ACCOUNT, SOURCE_REGION, DEST_REGION = "111122223333", "us-east-1", "us-west-2"
REPOSITORIES = ("team/a", "team/b", "other/c")
KIB = 1024


@dataclass
class NoCatalog:
    """A source reachable only through a proxy that hides its catalog, and a destination."""

    registry: Registry
    proxy: FaultProxy
    destination: Registry
    digest: str


@pytest.fixture
def no_catalog(
    registry_factory: RegistryFactory,
    fault_proxy_factory: Callable[[Registry], FaultProxy],
    dst_registry: Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NoCatalog]:
    """team/a, team/b and other/c (tag v1 each) at a source whose catalog answers 404."""
    layout = OCILayout(path := tmp_path_factory.mktemp("no-catalog"))
    built = layout.image("v1", [LayerSpec(93, 16 * KIB)], label="no-catalog")
    registry = registry_factory()
    for repository in REPOSITORIES:
        push_over_http(path, "v1", registry.url, repository)
    proxy = fault_proxy_factory(registry)
    proxy.add(Fault.status_code(404, requests("GET", r"^/v2/_catalog"), times=None))
    yield NoCatalog(registry, proxy, dst_registry, built.digest)
    registry.cleanup()


def _config(tmp_path: Path, world: NoCatalog, *, repositories: list[str] | None) -> Path:
    replication = tmp_path / "replication.json"
    replication.write_text(json.dumps({"rules": [rule([(DEST_REGION, ACCOUNT)])]}))
    listed = [f"repositories = {json.dumps(repositories)}"] if repositories is not None else []
    lines = [
        "version = 1",
        "[journal]",
        f'url = "sqlite:///{tmp_path / "journal.db"}"',
        "[registries.src]",
        f'account = "{ACCOUNT}"',
        f'region = "{SOURCE_REGION}"',
        f'url = "{world.proxy.url}"',
        'replication = "replication.json"',
        *listed,
        "[registries.dst]",
        f'account = "{ACCOUNT}"',
        f'region = "{DEST_REGION}"',
        f'url = "{world.destination.url}"',
    ]
    path = tmp_path / "replicator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _present(registry: Registry) -> list[str]:
    found = []
    for repository in REPOSITORIES:
        response = httpx.head(
            f"{registry.url}/v2/{repository}/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        if response.status_code == 200:
            found.append(repository)
    return found


class TestBackfill:
    """backfill of a source without a catalog."""

    def test_without_a_list_the_catalog_error_is_reported(
        self, no_catalog: NoCatalog, tmp_path: Path
    ) -> None:
        """No list: the closed catalog is an error of the run (exit 1), the summary says FAILED,
        the error says how to name the repositories, and nothing is copied."""
        result = replicator_cli(_config(tmp_path, no_catalog, repositories=None), "backfill")
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "backfill FAILED" in result.stdout, output
        for hint in ("catalog", no_catalog.proxy.host, "repositories = [", "--repository"):
            assert hint in output, output
        assert _present(no_catalog.destination) == []

    def test_config_list_replaces_the_catalog(self, no_catalog: NoCatalog, tmp_path: Path) -> None:
        """`repositories` on the source: exactly those are backfilled, the catalog never read."""
        config = _config(tmp_path, no_catalog, repositories=["team/a", "other/c"])
        result = replicator_cli(config, "backfill")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _present(no_catalog.destination) == ["team/a", "other/c"]
        assert "/v2/_catalog" not in no_catalog.registry.log_text()

    def test_command_line_wins_over_the_config_list(
        self, no_catalog: NoCatalog, tmp_path: Path
    ) -> None:
        """`--repository` names the run's repositories, whatever the config lists."""
        config = _config(tmp_path, no_catalog, repositories=["team/a"])
        result = replicator_cli(config, "backfill", "--repository", "team/b")
        assert result.returncode == 0, result.stdout + result.stderr
        assert _present(no_catalog.destination) == ["team/b"]


class TestVerify:
    """verify of a source without a catalog."""

    def test_repositories_from_file(self, no_catalog: NoCatalog, tmp_path: Path) -> None:
        """`--repositories-from` (comments and blank lines skipped) audits those repositories:
        after a backfill of team/a only, team/a is clean and other/c drifts."""
        config = _config(tmp_path, no_catalog, repositories=None)
        assert replicator_cli(config, "backfill", "--repository", "team/a").returncode == 0
        listing = tmp_path / "repositories.txt"
        listing.write_text("# audited\nteam/a\n\nother/c  # not yet copied\n")
        result = replicator_cli(config, "verify", "--repositories-from", str(listing), "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 1, result.stderr
        assert report["errors"] == []
        assert report["repositories"] == 2
        assert {item["repository"] for item in report["drift"]} == {"other/c"}

    def test_invalid_name_in_file_is_a_usage_error(
        self, no_catalog: NoCatalog, tmp_path: Path
    ) -> None:
        """A name outside the OCI grammar (a `..` segment) is refused before any request."""
        listing = tmp_path / "repositories.txt"
        listing.write_text("team/a\nteam/../secret\n")
        config = _config(tmp_path, no_catalog, repositories=None)
        result = replicator_cli(config, "verify", "--repositories-from", str(listing))
        assert result.returncode == 2, result.stderr
        assert "team/../secret" in result.stderr


class TestCopyRecursive:
    """copy -r of a prefix at a source without a catalog."""

    def test_named_repositories_under_the_prefix(self, no_catalog: NoCatalog) -> None:
        """`copy -r` with --repository copies those repositories, renamed under DST's prefix."""
        run = run_copy(
            "-r", f"{no_catalog.proxy.host}/team", f"{no_catalog.destination.host}/mirror",
            "--repository", "team/b",
        )  # fmt: skip
        assert run.exit_code == 0, str(run)
        response = httpx.head(
            f"{no_catalog.destination.url}/v2/mirror/b/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.headers.get("docker-content-digest") == no_catalog.digest

    def test_without_a_list_says_how_to_name_them(self, no_catalog: NoCatalog) -> None:
        """`copy -r` of a source that lists nothing fails naming the registry and the options
        that name the repositories instead."""
        run = run_copy("-r", f"{no_catalog.proxy.host}/team", f"{no_catalog.destination.host}/m")
        assert run.exit_code == 1, str(run)
        for hint in (no_catalog.proxy.host, "--repository", "--repositories-from"):
            assert hint in run.stderr, str(run)

    def test_name_outside_the_prefix_is_refused(self, no_catalog: NoCatalog) -> None:
        """A named repository outside SRC's prefix is a usage error (exit 2)."""
        run = run_copy(
            "-r", f"{no_catalog.proxy.host}/team", f"{no_catalog.destination.host}/mirror",
            "--repository", "other/c",
        )  # fmt: skip
        assert run.exit_code == 2, str(run)
        assert "other/c is not under" in run.stderr
