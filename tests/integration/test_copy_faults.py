"""`replicator copy` against registries that misbehave: a fault proxy in front of a real one."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.engine.source_reads import SHARED_BLOB_MAX
from tests.support import skopeo
from tests.support.copy_cli import assert_tags_equal, copy_ok, run_copy
from tests.support.copy_corpus import CopyCorpus
from tests.support.fault_proxy import (
    Fault,
    FaultKind,
    FaultProxy,
    blob_get,
    manifest_requests,
    requests,
    uploads,
)
from tests.support.images import LayerSpec, OCILayout
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

ProxyFactory = Callable[[Registry], FaultProxy]
# Retry-After the destination asks for: long enough to measure, short enough for the suite.
RETRY_AFTER_SECONDS = 2


def _gap_after_fault(proxy: FaultProxy, kind: FaultKind) -> float:
    """Seconds between the first faulted request and the next request to the same target."""
    records = proxy.records
    for number, record in enumerate(records):
        if record.fault is kind:
            path = record.target.split("?", 1)[0]
            for later in records[number + 1 :]:
                if later.method == record.method and later.target.split("?", 1)[0] == path:
                    return later.at - record.at
            raise AssertionError(f"{record.method} {record.target} was never retried")
    raise AssertionError(f"no {kind} fault fired")


class TestCorruptSource:
    """A source serving bytes that do not match their digest."""

    def test_corrupt_blob_fails_and_never_lands(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
    ) -> None:
        """Corrupted blob bytes exit 1 with DIGEST_MISMATCH; neither the blob nor the tag lands."""
        image = copy_corpus.images["team/app"]["v2"]
        victim = image.layer_digests[-1]
        proxy = fault_proxy_factory(copy_corpus.registry)
        fault = proxy.add(Fault.corrupt(blob_get(victim)))
        run = run_copy(f"{proxy.host}/team/app:v2", f"{dst_registry.host}/team/app:v2")
        assert run.exit_code == 1, str(run)
        assert "DIGEST_MISMATCH" in run.stderr
        assert "DIGEST_MISMATCH" in run.failure_codes
        assert fault.injected >= 1
        assert not dst_registry.has_blob(victim)
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == []


class TestTemporaryErrors:
    """Errors a registry means as "try again" are retried and the copy succeeds."""

    @pytest.mark.parametrize("http_date", [False, True], ids=["seconds", "http-date"])
    def test_destination_429_with_retry_after_is_honoured(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
        http_date: bool,
    ) -> None:
        """A 429 with Retry-After on the manifest PUT is waited out, then the copy succeeds."""
        proxy = fault_proxy_factory(dst_registry)
        fault = proxy.add(
            Fault.status_code(
                429,
                requests("PUT", r"/manifests/"),
                times=1,
                retry_after_seconds=RETRY_AFTER_SECONDS,
                retry_after_http_date=http_date,
            )
        )
        copy_ok(copy_corpus.ref("team/multi", "1.0"), f"{proxy.host}/team/multi:1.0")
        assert fault.injected == 1
        assert_tags_equal(f"{dst_registry.host}/team/multi", copy_corpus.tags("team/multi"))
        # An HTTP-date has whole seconds, so the wait it asks for may be up to 1 s shorter.
        least = RETRY_AFTER_SECONDS - (1.1 if http_date else 0.1)
        assert _gap_after_fault(proxy, FaultKind.STATUS) >= least

    @pytest.mark.parametrize(
        ("status", "where"),
        [
            pytest.param(503, "destination", id="503-upload-start"),
            pytest.param(502, "source", id="502-blob-get"),
            pytest.param(500, "source", id="500-blob-get"),
        ],
    )
    def test_5xx_a_few_times_then_success(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
        status: int,
        where: str,
    ) -> None:
        """Three 5xx answers in a row are retried and the copy completes with equal digests."""
        if where == "destination":
            proxy = fault_proxy_factory(dst_registry)
            fault = proxy.add(Fault.status_code(status, uploads(), times=3))
            source, target = copy_corpus.ref("team/app", "v2"), f"{proxy.host}/team/app:v2"
        else:
            proxy = fault_proxy_factory(copy_corpus.registry)
            fault = proxy.add(Fault.status_code(status, blob_get(), times=3))
            source, target = f"{proxy.host}/team/app:v2", f"{dst_registry.host}/team/app:v2"
        copy_ok(source, target)
        assert fault.injected == 3
        digest = copy_corpus.images["team/app"]["v2"].digest
        assert_tags_equal(f"{dst_registry.host}/team/app", {"v2": digest})

    @pytest.mark.parametrize("make", [Fault.truncate, Fault.reset], ids=["truncated", "reset"])
    def test_cut_blob_download_is_retried(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
        make: Callable[..., Fault],
    ) -> None:
        """A blob body cut short once (closed or reset) is fetched again; nothing corrupt lands."""
        image = copy_corpus.images["team/app"]["v2"]
        proxy = fault_proxy_factory(copy_corpus.registry)
        fault = proxy.add(make(blob_get(image.layer_digests[0]), keep_bytes=100_000))
        copy_ok(f"{proxy.host}/team/app:v2", f"{dst_registry.host}/team/app:v2")
        assert fault.injected == 1
        assert_tags_equal(f"{dst_registry.host}/team/app", {"v2": image.digest})


class TestPermanentErrors:
    """Errors that no retry fixes fail the copy with a clear code and reason."""

    @pytest.mark.parametrize(
        "source",
        [
            pytest.param("team/app:no-such-tag", id="unknown-tag"),
            pytest.param("team/no-such-repo:v1", id="unknown-repository"),
            pytest.param("team/app@sha256:" + "0" * 64, id="unknown-digest"),
        ],
    )
    def test_missing_source_image_is_not_found(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, source: str
    ) -> None:
        """A source image that does not exist exits 1 with NOT_FOUND naming the reference."""
        run = run_copy(f"{copy_corpus.registry.host}/{source}", f"{dst_registry.host}/team/app")
        assert run.exit_code == 1, str(run)
        line = next((ln for ln in run.stderr.splitlines() if "NOT_FOUND" in ln), "")
        assert line, str(run)
        assert re.split(r"[:@]", source, maxsplit=1)[0] in line
        assert "NOT_FOUND" in run.failure_codes
        assert dst_registry.repositories() == []

    def test_source_blob_gone_leaves_no_upload_session_open(
        self,
        src_registry: Registry,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
        tmp_path: Path,
    ) -> None:
        """A large blob the source answers 404 for fails the copy, and the upload session opened
        at the destination for it (before the source read) is ended, not left behind."""
        layout = OCILayout(tmp_path / "layout")
        image = layout.image("v1", [LayerSpec(seed=7, size=SHARED_BLOB_MAX + 1)])
        skopeo.push_layout(layout.path, "v1", f"{src_registry.host}/team/big:v1")
        victim = image.layer_digests[-1]
        proxy = fault_proxy_factory(src_registry)
        fault = proxy.add(Fault.status_code(404, blob_get(victim), times=None))
        run = run_copy(f"{proxy.host}/team/big:v1", f"{dst_registry.host}/team/big:v1")
        assert run.exit_code == 1, str(run)
        assert fault.injected >= 1
        assert not dst_registry.has_blob(victim)
        uploads_dir = dst_registry.root / "docker/registry/v2/repositories/team/big/_uploads"
        assert uploads_dir.is_dir(), "the destination never opened an upload session"
        # distribution keeps a session's `startedat` until a PUT commits or a DELETE ends it
        # (an ended session leaves only its `hashstates` directory behind).
        still_open = [path.parent.name for path in uploads_dir.glob("*/startedat")]
        assert still_open == []

    def test_destination_refusing_its_tag_list_still_takes_the_copy(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
    ) -> None:
        """A destination answering its tag list 403 (asked to know whether the repository
        exists) still receives every tag of --all-tags: the copy asks for each manifest and blob
        instead."""
        proxy = fault_proxy_factory(dst_registry)
        fault = proxy.add(Fault.status_code(403, requests("GET", r"/tags/list$"), times=None))
        copy_ok(copy_corpus.ref("team/app"), f"{proxy.host}/team/app", "--all-tags")
        assert fault.injected >= 1
        assert_tags_equal(f"{dst_registry.host}/team/app", copy_corpus.tags("team/app"))

    def test_malformed_manifest_json_is_invalid_manifest(
        self,
        copy_corpus: CopyCorpus,
        dst_registry: Registry,
        fault_proxy_factory: ProxyFactory,
    ) -> None:
        """A manifest body that is not JSON exits 1 with INVALID_MANIFEST and copies nothing."""
        proxy = fault_proxy_factory(copy_corpus.registry)
        proxy.add(
            Fault.serve_body(manifest_requests("team/app"), b'{"schemaVersion": 2, "layers": [')
        )
        run = run_copy(f"{proxy.host}/team/app:v1", f"{dst_registry.host}/team/app:v1")
        assert run.exit_code == 1, str(run)
        assert "INVALID_MANIFEST" in run.stderr
        assert "INVALID_MANIFEST" in run.failure_codes
        assert skopeo.list_tags(f"{dst_registry.host}/team/app") == []
