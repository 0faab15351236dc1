"""Streaming blob bytes: digest verification and re-chunking (replicator/registry/blobs.py)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.errors import DigestMismatch
from replicator.registry.blobs import _Rechunker, verified

CHUNKS = [b"first-chunk", b"second-chunk", b"last-chunk"]
DATA = b"".join(CHUNKS)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _drain(stream: AsyncIterator[bytes], out: list[bytes]) -> None:
    async for chunk in stream:
        out.append(chunk)


class TestVerified:
    """verified(): bytes pass through unchanged; a mismatch raises before the last chunk leaves."""

    @pytest.mark.parametrize(
        ("chunks", "digest"),
        [
            (CHUNKS, _sha256(DATA)),
            ([DATA], _sha256(DATA)),
            ([b"a", b"", b"b", b""], _sha256(b"ab")),
            ([], _sha256(b"")),
            ([b""], _sha256(b"")),
            (CHUNKS, "sha512:" + hashlib.sha512(DATA).hexdigest()),
        ],
        ids=["three-chunks", "one-chunk", "empty-chunks-dropped", "empty-blob", "only-empty",
             "sha512"],
    )  # fmt: skip
    async def test_matching_bytes_pass_through(self, chunks: list[bytes], digest: str) -> None:
        """Bytes that match digest and size come out as they went in (empty chunks dropped)."""
        out: list[bytes] = []
        expected = [c for c in chunks if c]
        await _drain(verified(_stream(chunks), digest, sum(map(len, chunks))), out)
        assert out == expected

    @pytest.mark.parametrize(
        ("chunks", "message", "yielded"),
        [
            ([b"first-chunk", b"second-chunk", b"LAST-CHUNK"], "hash to", CHUNKS[:2]),
            ([*CHUNKS, b"extra"], "longer than", CHUNKS[:2]),
            ([b"first-chunk", b"second-chunk", b"last-chunk-and-more"], "longer than",
             CHUNKS[:1]),
            ([b"first-chunk", b"second-chunk", b"last"], "got 27 bytes", CHUNKS[:2]),
            (CHUNKS[:2], "got 23 bytes", CHUNKS[:1]),
        ],
        ids=["wrong-bytes", "extra-chunk", "long-last-chunk", "short-last-chunk",
             "missing-last-chunk"],
    )  # fmt: skip
    async def test_mismatch_holds_back_the_last_chunk(
        self, chunks: list[bytes], message: str, yielded: list[bytes]
    ) -> None:
        """On wrong, too many or too few bytes DigestMismatch is raised and the end never leaves."""
        out: list[bytes] = []
        with pytest.raises(DigestMismatch, match=message):
            await _drain(verified(_stream(chunks), _sha256(DATA), len(DATA)), out)
        assert out == yielded
        assert len(b"".join(out)) < len(DATA)

    async def test_single_wrong_chunk_yields_nothing(self) -> None:
        """A one-chunk blob with the wrong bytes yields nothing at all."""
        out: list[bytes] = []
        with pytest.raises(DigestMismatch):
            await _drain(verified(_stream([b"x" * 10]), _sha256(b"y" * 10), 10), out)
        assert out == []

    async def test_overflow_stops_at_once(self) -> None:
        """Bytes beyond the size are refused when they arrive, without reading further."""
        pulled: list[bytes] = []

        async def source() -> AsyncIterator[bytes]:
            for chunk in [b"aaaa", b"bbbb", b"cccc", b"dddd"]:
                pulled.append(chunk)
                yield chunk

        out: list[bytes] = []
        with pytest.raises(DigestMismatch, match="longer than"):
            await _drain(verified(source(), _sha256(b"aaaabb"), 6), out)
        assert pulled == [b"aaaa", b"bbbb"]
        assert out == []

    async def test_last_chunk_waits_for_the_end_of_the_source(self) -> None:
        """A chunk leaves only once the next one has arrived, so the last waits for the hash."""
        stream = verified(_stream(CHUNKS), _sha256(DATA), len(DATA))
        assert await anext(stream) == CHUNKS[0]
        assert await anext(stream) == CHUNKS[1]
        assert await anext(stream) == CHUNKS[2]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)

    async def test_message_names_both_digests(self) -> None:
        """The mismatch message gives the digest asked for and the one the bytes have."""
        wanted = _sha256(b"other")
        with pytest.raises(DigestMismatch) as info:
            await _drain(verified(_stream([b"bytes"]), wanted, 5), [])
        assert wanted in str(info.value)
        assert _sha256(b"bytes") in str(info.value)


async def _take_all(rechunker: _Rechunker, lengths: list[int]) -> list[list[bytes]]:
    parts: list[list[bytes]] = []
    for length in lengths:
        part: list[bytes] = []
        await _drain(rechunker.take(length), part)
        parts.append(part)
    return parts


class TestRechunker:
    """_Rechunker.take(): consecutive sub-streams of exact lengths from one stream."""

    @pytest.mark.parametrize(
        ("chunks", "lengths", "expected"),
        [
            ([b"abc", b"defg", b"h"], [2, 4, 2], [b"ab", b"cdef", b"gh"]),
            ([b"abcdefgh"], [3, 3, 2], [b"abc", b"def", b"gh"]),
            ([b"a", b"b", b"c", b"d"], [4], [b"abcd"]),
            ([b"abcd"], [4, 1], [b"abcd", b""]),
            ([b"abc"], [2, 5], [b"ab", b"c"]),
            ([b"ab", b"", b"cd"], [3, 1], [b"abc", b"d"]),
            ([], [3], [b""]),
            ([b"abc"], [0, 3], [b"", b"abc"]),
        ],
        ids=["across-chunks", "split-one-chunk", "join-chunks", "after-the-end", "ends-early",
             "empty-chunk", "empty-stream", "zero-length"],
    )  # fmt: skip
    async def test_take(
        self, chunks: list[bytes], lengths: list[int], expected: list[bytes]
    ) -> None:
        """Each take() yields exactly its length (less only where the stream ends)."""
        parts = await _take_all(_Rechunker(_stream(chunks)), lengths)
        assert [b"".join(part) for part in parts] == expected

    async def test_pieces_never_exceed_the_length(self) -> None:
        """No piece of a take() is longer than what is left of its length."""
        parts = await _take_all(_Rechunker(_stream([b"x" * 10, b"y" * 10])), [3, 3, 14])
        assert [[len(p) for p in part] for part in parts] == [[3], [3], [4, 10]]

    @settings(deadline=None)  # a loaded CI machine can exceed the default 200 ms
    @given(
        st.lists(st.binary(max_size=40), max_size=12),
        st.lists(st.integers(min_value=0, max_value=50), max_size=12),
    )
    async def test_concatenation_preserved(self, chunks: list[bytes], lengths: list[int]) -> None:
        """However the stream is chunked and cut, the parts are consecutive slices of it."""
        data = b"".join(chunks)
        parts = await _take_all(_Rechunker(_stream(chunks)), lengths)
        offset = 0
        for length, part in zip(lengths, parts, strict=True):
            joined = b"".join(part)
            assert joined == data[offset : offset + length]
            offset += len(joined)

    async def test_verified_then_rechunked(self) -> None:
        """PATCH-sized parts of a verified stream reassemble into the blob."""
        data = bytes(range(256)) * 40
        chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
        rechunker = _Rechunker(verified(_stream(chunks), _sha256(data), len(data)))
        parts = await _take_all(rechunker, [4096, 4096, 4096])
        assert b"".join(b"".join(part) for part in parts) == data
