"""`replicator copy` over a link that drops: a proxy resets each connection after N bytes.

A layer several times N crosses it digest-exact, and what it costs on the wire stays within
`WIRE_FACTOR` of its size: a broken transfer continues where it stopped instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support import skopeo
from tests.support.copy_cli import run_copy
from tests.support.cutting_proxy import CuttingProxy
from tests.support.fault_proxy import Fault, FaultProxy, blob_get
from tests.support.images import BuiltImage, big_blob_layout
from tests.support.registry_fixtures import RegistryFactory, Serve
from tests.support.registry_server import Registry
from tests.support.resuming_uploads import ResumingUploads

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
# The link drops each connection after this many bytes in either direction.
CUT_AFTER = 8 * MIB
# Three cuts' worth: a layer that cannot cross in one connection, small enough to stay fast.
LAYER_SIZE = 3 * CUT_AFTER
# What a resumed transfer may cost on the wire, against the layer's size: headers, the small
# requests, and what was in flight at each cut.
WIRE_FACTOR = 1.25
# `--max-bandwidth 8M`, and how far the measured rate may be from it (the bound).
BANDWIDTH_LIMIT = 8 * MIB
BANDWIDTH_TOLERANCE = 0.05
# The rate is measured while the bytes on the wire go from 10% to 90% of the total: the layer's
# body, without the round trips before it starts and the manifest after it.
STEADY_FROM, STEADY_TO = 0.1, 0.9


IMAGE = "team/big:v1"


@dataclass(frozen=True)
class BigSource:
    """A source registry holding IMAGE, a one-layer image whose layer is LAYER_SIZE bytes."""

    registry: Registry
    image: BuiltImage

    @property
    def layer(self) -> str:
        """The digest of the image's one layer."""
        return self.image.layer_digests[0]


@pytest.fixture(scope="module")
def big_source(
    registry_factory: RegistryFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BigSource]:
    """IMAGE built and pushed once for the module: every test only reads it, through its own
    link, into its own fresh destination."""
    layout = tmp_path_factory.mktemp("long-links") / "layout"
    image = big_blob_layout(layout, "v1", LAYER_SIZE)
    registry = registry_factory()
    skopeo.push_layout(layout, "v1", f"{registry.host}/{IMAGE}")
    yield BigSource(registry, image)
    registry.cleanup()


class TestDroppingLink:
    """A link that resets every connection after CUT_AFTER bytes."""

    def test_download_resumes_where_the_link_dropped(
        self,
        big_source: BigSource,
        dst_registry: Registry,
        serve: Serve,
    ) -> None:
        """A source behind the link: the layer arrives digest-exact, with at most 1.25x its
        bytes read over the link."""
        proxy = serve(CuttingProxy(big_source.registry.url, cut_after=CUT_AFTER))
        run = run_copy(f"{proxy.host}/{IMAGE}", f"{dst_registry.host}/{IMAGE}")
        assert run.exit_code == 0, str(run)
        assert dst_registry.has_blob(big_source.layer)
        assert skopeo.digest_of(f"{dst_registry.host}/{IMAGE}") == big_source.image.digest
        assert proxy.cuts >= 2, "the link never dropped the transfer"
        assert proxy.bytes_to_client <= WIRE_FACTOR * LAYER_SIZE, (
            f"{proxy.bytes_to_client} bytes read for a {LAYER_SIZE}-byte layer"
        )

    def test_download_behind_a_storage_redirect_resumes(
        self,
        big_source: BigSource,
        dst_registry: Registry,
        serve: Serve,
        fault_proxy_factory: Callable[[Registry], FaultProxy],
    ) -> None:
        """A source whose blob GETs redirect to storage behind the link: each resume asks the
        registry again and follows its redirect with the Range; the layer arrives digest-exact
        with at most 1.25x its bytes read over the link."""
        storage = serve(CuttingProxy(big_source.registry.url, cut_after=CUT_AFTER))
        registry = fault_proxy_factory(big_source.registry)
        redirect = registry.add(Fault.redirect(blob_get(big_source.layer), storage.url))
        run = run_copy(f"{registry.host}/{IMAGE}", f"{dst_registry.host}/{IMAGE}")
        assert run.exit_code == 0, str(run)
        assert skopeo.digest_of(f"{dst_registry.host}/{IMAGE}") == big_source.image.digest
        assert storage.cuts >= 2, "the link never dropped the transfer"
        assert redirect.injected >= storage.cuts + 1, "a resume went to storage unasked"
        assert storage.bytes_to_client <= WIRE_FACTOR * LAYER_SIZE, (
            f"{storage.bytes_to_client} bytes read for a {LAYER_SIZE}-byte layer"
        )

    def test_upload_resumes_where_the_link_dropped(
        self,
        big_source: BigSource,
        dst_registry: Registry,
        serve: Serve,
    ) -> None:
        """A destination that says what a broken upload holds, behind the link: the upload
        goes on from there, the layer arrives digest-exact with at most 1.25x its bytes sent."""
        front = serve(ResumingUploads(dst_registry.url))
        proxy = serve(CuttingProxy(front.url, cut_after=CUT_AFTER))
        run = run_copy(f"{big_source.registry.host}/{IMAGE}", f"{proxy.host}/{IMAGE}")
        assert run.exit_code == 0, str(run)
        assert dst_registry.has_blob(big_source.layer)
        assert skopeo.digest_of(f"{dst_registry.host}/{IMAGE}") == big_source.image.digest
        assert front.patches_broken >= 2, "the link never dropped the upload"
        assert front.status_asked >= front.patches_broken
        assert proxy.bytes_to_upstream <= WIRE_FACTOR * LAYER_SIZE, (
            f"{proxy.bytes_to_upstream} bytes sent for a {LAYER_SIZE}-byte layer"
        )

    def test_destination_that_cannot_resume_gets_the_whole_blob(
        self,
        big_source: BigSource,
        dst_registry: Registry,
        serve: Serve,
    ) -> None:
        """docker-registry ends a session its upload broke in (its status GET cannot say what
        it holds): that is learned, and the blob is uploaded again whole, as before resuming
        existed."""
        proxy = serve(CuttingProxy(dst_registry.url, cut_after=CUT_AFTER, max_cuts=1))
        run = run_copy(f"{big_source.registry.host}/{IMAGE}", f"{proxy.host}/{IMAGE}")
        assert run.exit_code == 0, str(run)
        assert skopeo.digest_of(f"{dst_registry.host}/{IMAGE}") == big_source.image.digest
        assert proxy.cuts == 1
        assert run.stderr.count("upload_resume_unsupported") == 1, run.stderr
        # The bytes before the cut were lost with the session: the blob went up again whole.
        assert proxy.bytes_to_upstream >= LAYER_SIZE + CUT_AFTER


class TestBandwidthLimit:
    """`copy --max-bandwidth`: blob bytes to the destination at the limit, not above or below."""

    def test_upload_runs_at_the_limit(
        self,
        big_source: BigSource,
        dst_registry: Registry,
        serve: Serve,
    ) -> None:
        """A 24 MiB layer copied at 8 MiB/s crosses to the destination at 8 MiB/s within 5%
        (over its middle 80%, about 2.4 s)."""
        proxy = serve(CuttingProxy(dst_registry.url, cut_after=None))
        run = run_copy(
            f"{big_source.registry.host}/{IMAGE}",
            f"{proxy.host}/{IMAGE}",
            "--max-bandwidth",
            "8M",
        )
        assert run.exit_code == 0, str(run)
        assert skopeo.digest_of(f"{dst_registry.host}/{IMAGE}") == big_source.image.digest
        rate = proxy.upstream_rate(STEADY_FROM, STEADY_TO)
        assert abs(rate - BANDWIDTH_LIMIT) <= BANDWIDTH_TOLERANCE * BANDWIDTH_LIMIT, (
            f"{rate / MIB:.2f} MiB/s at a limit of {BANDWIDTH_LIMIT / MIB:.0f} MiB/s"
        )
