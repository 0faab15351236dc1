"""A registry whose redirects loop: the request fails at once, permanently, instead of being
retried as a temporary error (a fault proxy in front of docker-registry answers every blob GET
with a 307 to itself)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.copy_cli import run_copy
from tests.support.copy_corpus import CopyCorpus
from tests.support.fault_proxy import Fault, FaultProxy, blob_get
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

ProxyFactory = Callable[[Registry], FaultProxy]
# A loop is seen at its second hop; one blob's GET then costs a few requests, not the 546 that
# the retries of a "temporary" TooManyRedirects took before.
MAX_BLOB_GETS = 10


class TestRedirectLoop:
    """A redirect loop is permanent for that request."""

    def test_blob_redirect_loop_fails_permanently(
        self, copy_corpus: CopyCorpus, dst_registry: Registry, fault_proxy_factory: ProxyFactory
    ) -> None:
        """Every blob GET of the source redirected to itself: the copy exits 1 with a
        permanent REGISTRY_ERROR naming the loop, after a handful of blob GETs."""
        proxy = fault_proxy_factory(copy_corpus.registry)
        loop = proxy.add(Fault.redirect(blob_get(), proxy.url))
        run = run_copy(f"{proxy.host}/team/app:v1", f"{dst_registry.host}/team/app:v1")
        assert run.exit_code == 1, str(run)
        assert run.failure_codes == ["REGISTRY_ERROR"], str(run)
        assert "redirect loop" in run.stderr, str(run)
        assert 0 < loop.injected <= MAX_BLOB_GETS, f"{loop.injected} blob GETs"
