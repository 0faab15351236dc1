"""`registries.<name>.read_timeout`: how long one exchange waits for a slow registry's answer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from replicator.config.loading import load_config
from replicator.config.sites import settings_for
from replicator.errors import TransportError
from replicator.registry.pool import ClientPool
from replicator.registry.retry import RetryPolicy
from tests.support.fault_proxy import Fault, FaultProxy, requests
from tests.support.registry_server import Registry

pytestmark = pytest.mark.integration

# The registry behind the proxy answers after this long: past a 1 s read timeout, well within
# the default 120 s (and within a 10 s one).
STALL_SECONDS = 3.0
# Seconds a request cut by a 1 s read timeout may take on a loaded machine.
CUT_WITHIN_SECONDS = STALL_SECONDS - 0.5


def _config(tmp_path: Path, url: str, extra: str) -> Path:
    path = tmp_path / "replicator.toml"
    path.write_text(
        f'version = 1\n[registries.slow]\naccount = "111122223333"\nregion = "us-east-1"\n'
        f'url = "{url}"\n{extra}'
    )
    return path


class TestReadTimeout:
    """A registry slower to answer than its read timeout fails the try; a longer one waits."""

    @pytest.mark.parametrize(
        ("extra", "answered"),
        [("read_timeout = 1\n", False), ("", True), ("read_timeout = 10.5\n", True)],
        ids=["1s-cut", "default-waits", "10.5s-waits"],
    )
    async def test_read_timeout_from_config_bounds_the_wait(
        self,
        tmp_path: Path,
        dst_registry: Registry,
        fault_proxy_factory: Callable[[Registry], FaultProxy],
        extra: str,
        answered: bool,
    ) -> None:
        """The config's read_timeout reaches the socket: an answer 3 s late is waited for under
        the default and under 10.5 s, and cut within the stall under 1 s."""
        proxy = fault_proxy_factory(dst_registry)
        proxy.add(Fault.stall(requests("GET", r"^/v2/$"), STALL_SECONDS))
        config = load_config(_config(tmp_path, proxy.url, extra))
        # One try, so the time measured is one exchange's.
        settings = dataclasses.replace(
            settings_for(config.registries["slow"], 2), retry=RetryPolicy(attempts=1)
        )
        async with ClientPool() as pool:
            client = pool.client(settings)
            started = time.monotonic()
            if answered:
                response = await client.request("GET", "/v2/", scope="")
                assert response.status_code == 200
                assert time.monotonic() - started >= STALL_SECONDS - 0.1
            else:
                with pytest.raises(TransportError, match="ReadTimeout"):
                    await client.request("GET", "/v2/", scope="")
                assert time.monotonic() - started < CUT_WITHIN_SECONDS
