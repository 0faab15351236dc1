"""registry.blob_uploads: the hash of a resumed upload is the hash of the blob, however it broke."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.errors import DigestMismatch
from replicator.registry.blob_uploads import CHECKPOINT_BYTES, UploadModes, _Hash, _Source

SIZE = 3 * CHECKPOINT_BYTES + 12345
DATA = bytes(range(256)) * (SIZE // 256) + bytes(SIZE % 256)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class TestHash:
    """_Hash: checkpoints let a resume go back and hash on to the same digest."""

    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(st.integers(1, 2 * CHECKPOINT_BYTES), min_size=1, max_size=8),
        st.lists(st.integers(0, SIZE), max_size=3),
    )
    def test_breaks_anywhere_hash_to_the_blob(self, pieces: list[int], breaks: list[int]) -> None:
        """Fed in any pieces, rewound to any offsets it had passed and fed on from the
        checkpoint it went back to, the hash is the blob's digest."""
        hashed = _Hash(DIGEST)
        for point in breaks:
            position = 0
            for piece in pieces:
                if position >= point:
                    break
                hashed.update(DATA[position : position + piece])
                position += piece
            start = hashed.rewind(min(point, hashed.offset))
            assert start <= point
            assert start % CHECKPOINT_BYTES == 0
        hashed.update(DATA[hashed.offset :])
        hashed.check()

    def test_forgetting_keeps_the_checkpoint_a_resume_needs(self) -> None:
        """After forget_below(N), a rewind to N or later still finds a checkpoint."""
        hashed = _Hash(DIGEST)
        hashed.update(DATA)
        offset = 2 * CHECKPOINT_BYTES + 5
        hashed.forget_below(offset)
        assert hashed.rewind(offset) == 2 * CHECKPOINT_BYTES
        hashed.update(DATA[hashed.offset :])
        hashed.check()


class TestUploadModes:
    """UploadModes: a registry is resumable until it shows it is not."""

    def test_learned_per_registry(self) -> None:
        """One registry learned whole-blob leaves the others resumable."""
        modes = UploadModes()
        assert modes.resumable("a:5000")
        modes.whole_blobs("a:5000", "status GET answered 404")
        assert not modes.resumable("a:5000")
        assert modes.resumable("b:5000")


@asynccontextmanager
async def _from_memory(start: int) -> AsyncIterator[AsyncIterator[bytes]]:
    """The blob DATA from `start`, in 64 KiB chunks (as a registry's Range GET answers)."""

    async def chunks() -> AsyncIterator[bytes]:
        for offset in range(start, SIZE, 64 * 1024):
            yield DATA[offset : offset + 64 * 1024]

    yield chunks()


async def _drain(source: _Source, length: int) -> bytes:
    return b"".join([piece async for piece in source.take(length)])


class TestSource:
    """_Source: the bytes from any offset a registry may report, hashed once in order."""

    def test_seek_back_and_beyond_the_position(self) -> None:
        """Rewound to where the registry stood, then forward past the position (an earlier
        broken request's bytes landed late), the bytes and the hash are the blob's."""

        async def run() -> None:
            source = _Source(_from_memory, DIGEST, SIZE)
            await source.seek(0)
            assert await _drain(source, 3 * CHECKPOINT_BYTES) == DATA[: 3 * CHECKPOINT_BYTES]
            await source.seek(CHECKPOINT_BYTES + 5)
            assert source.position == CHECKPOINT_BYTES + 5
            assert source.furthest == 3 * CHECKPOINT_BYTES
            await source.seek(2 * CHECKPOINT_BYTES + 7)
            assert await _drain(source, SIZE - source.position) == DATA[2 * CHECKPOINT_BYTES + 7 :]
            source.hash.check()
            await source.close()

        asyncio.run(run())

    def test_a_short_source_is_a_digest_mismatch(self) -> None:
        """A source that ends before the descriptor's size is DigestMismatch, not a hang."""

        async def run() -> None:
            source = _Source(_from_memory, DIGEST, SIZE + 1)
            await source.seek(0)
            with pytest.raises(DigestMismatch, match="ended at byte"):
                await _drain(source, SIZE + 1)
            await source.close()

        asyncio.run(run())
