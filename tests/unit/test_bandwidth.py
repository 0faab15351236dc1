"""Bandwidth limits: the rate's spelling, the config key, and the token bucket senders share."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pytest

from replicator.cli.backfill import _with_bandwidth
from replicator.cli.parsing import byte_rate
from replicator.config.loading import load_config
from replicator.config.sites import settings_for
from replicator.errors import ConfigError
from replicator.registry.bandwidth import BURST_SECONDS, PIECE_BYTES, Bandwidth

MIB = 1024 * 1024
REGISTRY = """
version = 1
[registries.use1]
account = "111122223333"
region = "us-east-1"
url = "http://127.0.0.1:5001"
"""
# A rate and a volume that take about a quarter second past the burst: long enough to measure.
RATE = 4 * MIB
SENT = MIB + int(RATE * BURST_SECONDS)


class TestByteRate:
    """byte_rate: `--max-bandwidth`'s value."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("8388608", 8 * MIB, id="bytes"),
            pytest.param("512k", 512 * 1024, id="kibibytes"),
            pytest.param("8M", 8 * MIB, id="mebibytes"),
            pytest.param("1g", 1024 * MIB, id="gibibytes"),
        ],
    )
    def test_accepted(self, text: str, expected: int) -> None:
        """A number of bytes per second, with k, M or G as binary multiples."""
        assert byte_rate(text) == expected

    @pytest.mark.parametrize("text", ["0", "0M", "-1", "8MB", "1.5M", "M", "", "٣"])
    def test_refused(self, text: str) -> None:
        """Zero, negatives, fractions, other units and non-ASCII digits are refused."""
        with pytest.raises(argparse.ArgumentTypeError):
            byte_rate(text)


class TestConfigKey:
    """registries.<name>.max_bandwidth reaches the registry's client settings."""

    def test_set(self, tmp_path: Path) -> None:
        """A positive rate is kept and handed to the client."""
        path = tmp_path / "replicator.toml"
        path.write_text(REGISTRY + "max_bandwidth = 8388608\n")
        registry = load_config(path).registries["use1"]
        assert settings_for(registry, 8).max_bandwidth == 8 * MIB

    def test_unset_is_no_limit(self, tmp_path: Path) -> None:
        """Without the key there is no limit."""
        path = tmp_path / "replicator.toml"
        path.write_text(REGISTRY)
        assert settings_for(load_config(path).registries["use1"], 8).max_bandwidth is None

    def test_zero_refused(self, tmp_path: Path) -> None:
        """A zero rate is a config error naming the key."""
        path = tmp_path / "replicator.toml"
        path.write_text(REGISTRY + "max_bandwidth = 0\n")
        with pytest.raises(ConfigError, match="max_bandwidth"):
            load_config(path)


async def _send(limit: Bandwidth, size: int) -> float:
    """Send `size` bytes through the limit in network-sized chunks; when it finished."""

    async def chunks() -> object:
        for _ in range(size // PIECE_BYTES):
            yield bytes(PIECE_BYTES)

    async for _ in limit.metered(chunks()):  # type: ignore[arg-type]
        pass
    return time.monotonic()


class TestBucket:
    """Bandwidth: the rate holds across senders, and they share it in turn."""

    def test_two_senders_share_the_rate(self) -> None:
        """Two senders of SENT bytes each take as long as one sender of twice as much, and
        finish within the burst of each other (in turn past it, neither starved)."""

        async def run() -> tuple[float, float, float]:
            limit = Bandwidth(RATE)
            started = time.monotonic()
            first, second = await asyncio.gather(_send(limit, SENT), _send(limit, SENT))
            return started, first, second

        started, first, second = asyncio.run(run())
        least = (2 * SENT - RATE * BURST_SECONDS) / RATE
        assert max(first, second) - started >= least * 0.99
        assert abs(first - second) <= BURST_SECONDS + 2 * PIECE_BYTES / RATE + 0.05


class TestBackfillFlag:
    """backfill --max-bandwidth: the limit for every registry of the run, or one."""

    def test_every_registry_or_the_destination_only(self, tmp_path: Path) -> None:
        """Without --destination each registry gets the limit; with it, that one only, the
        others keeping their own."""
        path = tmp_path / "replicator.toml"
        path.write_text(
            REGISTRY
            + "max_bandwidth = 1024\n"
            + REGISTRY.split("\n", 2)[2]
            .replace("use1", "usw2")
            .replace("us-east-1", "us-west-2")
            .replace("5001", "5002")
        )
        config = load_config(path)
        everywhere = _with_bandwidth(config, 8 * MIB, only=None)
        assert {n: r.max_bandwidth for n, r in everywhere.registries.items()} == {
            "use1": 8 * MIB,
            "usw2": 8 * MIB,
        }
        one = _with_bandwidth(config, 8 * MIB, only="usw2")
        assert {n: r.max_bandwidth for n, r in one.registries.items()} == {
            "use1": 1024,
            "usw2": 8 * MIB,
        }
        assert one.registries["usw2"].name == "usw2"
