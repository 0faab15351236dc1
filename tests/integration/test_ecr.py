"""Amazon ECR natively (`auth = "ecr"`): tokens from GetAuthorizationToken, repositories created
with CreateRepository at a destination when the policy allows it, an ECR source listed with
DescribeRepositories/ListImages. ECR's API is moto_server (real botocore calls over HTTP); the
ECR registry is a docker-registry accepting only `AWS:<that token's password>`."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from replicator.registry.ecr import MIN_TOKEN_REUSE, EcrApi, EcrCredentials
from tests.support.daemon import allow_policy, replicator_cli, rule
from tests.support.images import LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.moto_ecr import AWS_ENVIRONMENT, MotoServer, ecr_password
from tests.support.registry_fixtures import RegistryFactory
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

SOURCE_ACCOUNT, ECR_ACCOUNT = "111122223333", "444455556666"
SOURCE_REGION, ECR_REGION, OTHER_REGION = "us-east-1", "eu-west-1", "us-west-2"
KIB = 1024


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto_server for this module."""
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A fresh moto and AWS credentials in the environment (botocore's standard chain)."""
    moto.reset()
    for name, value in AWS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return moto


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small image, tag v1, in an OCI layout; its digest."""
    built = OCILayout(path := tmp_path_factory.mktemp("ecr-layout")).image(
        "v1", [LayerSpec(91, 32 * KIB)], label="ecr"
    )
    return path, built.digest


def _ecr_registry(factory: RegistryFactory, account: str) -> Registry:
    return factory(auth=("AWS", ecr_password(account)))


def _config(tmp_path: Path, *registries: dict[str, Any]) -> Path:
    lines = ["version = 1", "[journal]", f'url = "sqlite:///{tmp_path / "journal.db"}"']
    for number, registry in enumerate(registries):
        name = registry.pop("name")
        lines.append(f"[registries.{name}]")
        for key, value in registry.items():
            if isinstance(value, dict):
                document = tmp_path / f"{name}-{key}-{number}.json"
                document.write_text(json.dumps(value))
            text = document.name if isinstance(value, dict) else value
            lines.append(f"{key} = {json.dumps(text)}")
    path = tmp_path / "replicator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _backfill(config: Path) -> tuple[int, dict[str, Any]]:
    result = replicator_cli(config, "backfill", "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _tag_digest(registry: Registry, repository: str, tag: str, account: str) -> str | None:
    response = httpx.head(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        auth=("AWS", ecr_password(account)),
    )
    return response.headers.get("docker-content-digest") if response.status_code == 200 else None


def _into_ecr_destination(
    tmp_path: Path, source: Registry, ecr: Registry, moto: MotoServer, policy: dict[str, Any]
) -> Path:
    return _config(
        tmp_path,
        {
            "name": "use1", "account": SOURCE_ACCOUNT, "region": SOURCE_REGION,
            "url": source.url,
            "replication": {"rules": [rule([(ECR_REGION, ECR_ACCOUNT)], ["prod"])]},
        },
        {
            "name": "ecr", "account": ECR_ACCOUNT, "region": ECR_REGION, "url": ecr.url,
            "auth": "ecr", "ecr_endpoint": moto.url, "policy": policy,
        },
    )  # fmt: skip


class TestEcrDestination:
    """Backfill into an ECR destination, cross-account, as ECR replication does."""

    def test_missing_repository_is_created_then_the_image_copied(
        self,
        aws: MotoServer,
        registry_factory: RegistryFactory,
        src_registry: Registry,
        layout: tuple[Path, str],
        tmp_path: Path,
    ) -> None:
        """The policy allows ecr:CreateRepository: the repository is created in ECR with
        CreateRepository, and the image pushed with the GetAuthorizationToken token."""
        path, digest = layout
        push_over_http(path, "v1", src_registry.url, "prod/app")
        ecr = _ecr_registry(registry_factory, ECR_ACCOUNT)
        policy = allow_policy(SOURCE_ACCOUNT, ECR_REGION, ECR_ACCOUNT, "prod/*")
        code, summary = _backfill(_into_ecr_destination(tmp_path, src_registry, ecr, aws, policy))
        assert code == 0, summary
        assert aws.repositories(ECR_ACCOUNT, ECR_REGION) == ["prod/app"]
        assert _tag_digest(ecr, "prod/app", "v1", ECR_ACCOUNT) == digest

    def test_without_create_repository_only_existing_repositories_are_written(
        self,
        aws: MotoServer,
        registry_factory: RegistryFactory,
        src_registry: Registry,
        layout: tuple[Path, str],
        tmp_path: Path,
    ) -> None:
        """A policy granting only ecr:ReplicateImage: the job fails POLICY_DENIED and no
        repository is created; once the repository exists in ECR (empty: no tag to see over
        the registry API), DescribeRepositories finds it and the image is copied."""
        path, digest = layout
        push_over_http(path, "v1", src_registry.url, "prod/app")
        ecr = _ecr_registry(registry_factory, ECR_ACCOUNT)
        policy = allow_policy(SOURCE_ACCOUNT, ECR_REGION, ECR_ACCOUNT, "prod/*")
        policy["Statement"][0]["Action"] = ["ecr:ReplicateImage"]
        config = _into_ecr_destination(tmp_path, src_registry, ecr, aws, policy)
        _, summary = _backfill(config)
        assert [d["code"] for d in summary["denied"]] == ["POLICY_DENIED"], summary
        assert "ecr:CreateRepository" in summary["denied"][0]["reason"]
        assert aws.repositories(ECR_ACCOUNT, ECR_REGION) == []
        assert _tag_digest(ecr, "prod/app", "v1", ECR_ACCOUNT) is None
        aws.ecr(ECR_REGION).create_repository(registryId=ECR_ACCOUNT, repositoryName="prod/app")
        code, summary = _backfill(config)
        assert code == 0, summary
        assert _tag_digest(ecr, "prod/app", "v1", ECR_ACCOUNT) == digest


class TestEcrSource:
    """An ECR source is listed through ECR's API: it has no /v2/_catalog."""

    def test_source_listed_with_describe_repositories_and_list_images(
        self,
        aws: MotoServer,
        registry_factory: RegistryFactory,
        dst_registry: Registry,
        layout: tuple[Path, str],
        tmp_path: Path,
    ) -> None:
        """Repositories come from DescribeRepositories and tags from ListImages: the
        registry is never asked for its catalog or tag list, and the image arrives."""
        path, digest = layout
        ecr = _ecr_registry(registry_factory, SOURCE_ACCOUNT)
        push_over_http(path, "v1", ecr.url, "team/app", auth=("AWS", ecr_password(SOURCE_ACCOUNT)))
        api = aws.ecr(SOURCE_REGION)
        api.create_repository(registryId=SOURCE_ACCOUNT, repositoryName="team/app")
        manifest = (path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text()
        api.put_image(
            registryId=SOURCE_ACCOUNT, repositoryName="team/app", imageManifest=manifest,
            imageTag="v1",
        )  # fmt: skip
        config = _config(
            tmp_path,
            {
                "name": "ecr", "account": SOURCE_ACCOUNT, "region": SOURCE_REGION,
                "url": ecr.url, "auth": "ecr", "ecr_endpoint": aws.url,
                "replication": {"rules": [rule([(OTHER_REGION, SOURCE_ACCOUNT)])]},
            },
            {"name": "usw2", "account": SOURCE_ACCOUNT, "region": OTHER_REGION,
             "url": dst_registry.url},
        )  # fmt: skip
        code, summary = _backfill(config)
        assert code == 0, summary
        served = httpx.head(
            f"{dst_registry.url}/v2/team/app/manifests/v1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert served.headers.get("docker-content-digest") == digest
        log = ecr.log_text()
        assert "/v2/_catalog" not in log
        assert "/tags/list" not in log

    async def test_listings_name_every_repository_and_tag(
        self, aws: MotoServer, layout: tuple[Path, str]
    ) -> None:
        """DescribeRepositories names every repository and ListImages every tag; the tags of a
        missing repository are none (moto answers in one page: nextToken is not exercised)."""
        path, digest = layout
        manifest = (path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text()
        api = aws.ecr(SOURCE_REGION)
        names = [f"team/app{number}" for number in range(5)]
        for name in names:
            api.create_repository(registryId=SOURCE_ACCOUNT, repositoryName=name)
        tags = [f"v{number}" for number in range(5)]
        for tag in tags:
            api.put_image(
                registryId=SOURCE_ACCOUNT, repositoryName=names[0], imageManifest=manifest,
                imageTag=tag,
            )  # fmt: skip
        ecr = EcrApi(SOURCE_ACCOUNT, SOURCE_REGION, aws.url)
        assert sorted(await ecr.repositories()) == names
        assert sorted(await ecr.tags(names[0])) == tags
        assert await ecr.tags("team/missing") == []


class TestEcrTokens:
    """GetAuthorizationToken tokens are reused until due, then renewed."""

    async def test_token_reused_until_due_then_fetched_again(self, aws: MotoServer) -> None:
        """Real GetAuthorizationToken calls: the token is decoded to AWS:<password>, reused
        while valid, and fetched again once its renewal time has passed (moto's tokens are
        already expired, so they are reused for MIN_TOKEN_REUSE seconds). `cached()` says which
        `get()` asks nothing (the Authenticator gives a job's slot back around the others)."""
        now = [time.time()]
        provider = EcrCredentials.of(EcrApi(ECR_ACCOUNT, ECR_REGION, aws.url))
        provider.clock = lambda: now[0]
        cached = [provider.cached()]
        with capture_logs() as logs:
            first = await provider.get()
            cached.append(provider.cached())
            again = await provider.get()
            now[0] += MIN_TOKEN_REUSE + 1
            cached.append(provider.cached())
            renewed = await provider.get()
            forced = await provider.get(refresh=True)
        assert first is not None
        assert (first.username, first.password) == ("AWS", ecr_password(ECR_ACCOUNT))
        assert again == renewed == forced == first
        assert [e["event"] for e in logs].count("ecr_token_fetched") == 3
        assert cached == [False, True, False]
        assert ecr_password(ECR_ACCOUNT) not in repr(logs)
        token = base64.b64encode(f"AWS:{first.password}".encode()).decode()
        assert token not in repr(logs)

    async def test_no_credentials_is_a_clear_permanent_error(
        self, moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Without AWS credentials anywhere in the chain, the error says so and is permanent."""
        for name in (*AWS_ENVIRONMENT, "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        provider = EcrCredentials.of(EcrApi(ECR_ACCOUNT, ECR_REGION, moto.url))
        with pytest.raises(Exception, match="no AWS credentials found") as caught:
            await provider.get()
        assert getattr(caught.value, "temporary", None) is False
