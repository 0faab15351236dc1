"""Bulkheads: a job waiting for a token gives its destination slot back.

One destination (docker-registry) with `per_registry = 1`; a healthy source (docker-registry);
a source behind a fault proxy whose first request for `slow/app` is answered 401 with a Bearer
challenge naming the token issuer of tests/support/token_issuer.py, which holds every token
request (a slow token service). While the slow source's job waits for its token, a push from the
healthy source must be replicated; once the token service answers, the waiting job finishes too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import manifest_present, wait_for
from tests.support.fault_proxy import Fault, requests
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.registry_fixtures import RegistryFactory
from tests.support.token_issuer import SERVICE, TokenIssuer
from tests.support.two_sources import TwoSources, two_sources

pytestmark = pytest.mark.integration

# One slot: the job waiting for its token holds all of the destination unless it gives it back.
PER_REGISTRY = 1
# An event reaches the daemon and its job starts in well under a second; generous under load.
STARTED_WITHIN_SECONDS = 15.0
# An idle push is replicated in about a second here; generous for a loaded machine.
REPLICATED_WITHIN_SECONDS = 15.0


@pytest.fixture
def setup(
    registry_factory: RegistryFactory,
    token_issuer: TokenIssuer,
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> Iterator[TwoSources]:
    """The daemon replicating `good` and `slowauth` (behind the challenging proxy) to `dst`."""
    challenge = Fault.challenge(
        requests(path_pattern="^/v2/slow/"),
        f'Bearer realm="{token_issuer.realm}",service="{SERVICE}",scope="repository:slow/app:pull"',
        times=1,
    )
    with two_sources(
        registry_factory,
        mosquitto,
        tmp_path,
        held="slowauth",
        direct="good",
        faults=[challenge],
        per_registry=PER_REGISTRY,
    ) as started:
        try:
            yield started
        finally:
            token_issuer.release()  # before the daemon stops: no request of its left held


class TestTokenWaits:
    """A token fetch is a wait: it does not keep the destination's slot."""

    def test_push_proceeds_while_another_job_waits_for_its_token(
        self, setup: TwoSources, token_issuer: TokenIssuer
    ) -> None:
        """With one destination slot and a job waiting on a held token request, a push from
        another source is replicated; the waiting job completes once the token comes."""
        token_issuer.hold()
        setup.push("slowauth", "slow/app", "slowauth-v1")
        wait_for(
            lambda: token_issuer.held_requests >= 1,
            timeout=STARTED_WITHIN_SECONDS,
            what="the slow source's job asking for its token",
        )
        setup.push("good", "good/app", "good-v1")
        waited = setup.replicated_within("good/app", "good-v1", REPLICATED_WITHIN_SECONDS)
        print(f"healthy push beside a job waiting for its token: {waited:.2f} s")
        assert waited < REPLICATED_WITHIN_SECONDS, (
            f"the healthy push was not replicated within {REPLICATED_WITHIN_SECONDS} s while "
            f"the other job waited for its token\n{setup.daemon.log_tail()}"
        )
        assert not manifest_present(setup.dst.url, "slow/app", "slowauth-v1"), "still waiting"
        token_issuer.release()
        wait_for(
            lambda: manifest_present(setup.dst.url, "slow/app", "slowauth-v1"),
            timeout=REPLICATED_WITHIN_SECONDS,
            what="the job that waited for its token to finish",
        )
