"""domain.transfers.resumes: reading where a broken transfer stands, and whether to resume it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.domain.transfers.resumes import (
    MAX_STALLED_RESUMES,
    STALLED_RESUME_WAIT_SECONDS,
    ContentRange,
    Resume,
    after_break,
    download_skip,
    parse_content_range,
    upload_offset,
)


class TestParseContentRange:
    """parse_content_range: the `Content-Range` of a 206 answer."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("bytes 100-199/200", ContentRange(100, 199, 200), id="known-total"),
            pytest.param("bytes 0-0/*", ContentRange(0, 0, None), id="unknown-total"),
            pytest.param("BYTES 5-9/10", ContentRange(5, 9, 10), id="case-insensitive"),
            pytest.param(" bytes 5-9/10 ", ContentRange(5, 9, 10), id="spaces-around"),
            pytest.param("bytes 9-5/10", None, id="end-before-start"),
            pytest.param("bytes */10", None, id="unsatisfied-form"),
            pytest.param("5-9/10", None, id="no-unit"),
            pytest.param("", None, id="empty"),
            pytest.param(None, None, id="absent"),
        ],
    )
    def test_value(self, value: str | None, expected: ContentRange | None) -> None:
        """A well-formed range is read; anything else is None."""
        assert parse_content_range(value) == expected

    @given(st.integers(0, 2**40), st.integers(0, 2**40))
    def test_round_trip(self, start: int, length: int) -> None:
        """Any range written as servers write it reads back the same."""
        end = start + length
        assert parse_content_range(f"bytes {start}-{end}/{end + 1}") == ContentRange(
            start, end, end + 1
        )


class TestUploadOffset:
    """upload_offset: the bytes an upload session holds, from its `Range: 0-E`."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("0-8388607", 8 * 1024 * 1024, id="distribution-form"),
            pytest.param("bytes=0-99", 100, id="request-form"),
            pytest.param("0-0", 0, id="fresh-session"),
            pytest.param("5-99", None, id="not-from-zero"),
            pytest.param("0-", None, id="open-ended"),
            pytest.param("", None, id="empty"),
            pytest.param(None, None, id="absent"),
        ],
    )
    def test_value(self, value: str | None, expected: int | None) -> None:
        """0-E says E + 1 bytes are held, 0-0 none; other forms are None."""
        assert upload_offset(value) == expected


class TestAfterBreak:
    """after_break: resume while resumes bring bytes, give up after a run that brings none."""

    @pytest.mark.parametrize(
        ("offset", "resumed_at", "stalled", "expected"),
        [
            pytest.param(100, 0, 0, Resume(0, 0.0), id="progress-resumes-at-once"),
            pytest.param(200, 100, 2, Resume(0, 0.0), id="progress-clears-stalls"),
            pytest.param(100, 100, 0, Resume(1, STALLED_RESUME_WAIT_SECONDS), id="first-stall"),
            pytest.param(
                100, 100, MAX_STALLED_RESUMES - 2,
                Resume(MAX_STALLED_RESUMES - 1, STALLED_RESUME_WAIT_SECONDS), id="last-stall",
            ),
            pytest.param(100, 100, MAX_STALLED_RESUMES - 1, None, id="gives-up"),
            pytest.param(0, 0, MAX_STALLED_RESUMES - 1, None, id="never-moved"),
        ],
    )  # fmt: skip
    def test_decision(
        self, offset: int, resumed_at: int, stalled: int, expected: Resume | None
    ) -> None:
        """New bytes since the last resume reset the count; MAX_STALLED_RESUMES ends it."""
        assert after_break(offset=offset, resumed_at=resumed_at, stalled=stalled) == expected


class TestDownloadSkip:
    """download_skip: how the answer to a Range GET continues the stream."""

    @pytest.mark.parametrize(
        ("status", "content_range", "offset", "expected"),
        [
            pytest.param(206, ContentRange(100, 199, 200), 100, 0, id="partial-at-offset"),
            pytest.param(206, ContentRange(0, 199, 200), 100, None, id="partial-elsewhere"),
            pytest.param(206, None, 100, None, id="partial-without-range"),
            pytest.param(200, None, 100, 100, id="whole-blob-again"),
            pytest.param(200, None, 0, 0, id="first-read"),
        ],
    )
    def test_answer(
        self, status: int, content_range: ContentRange | None, offset: int, expected: int | None
    ) -> None:
        """A 206 must start at the offset; a 200 has the bytes already held dropped."""
        assert download_skip(status=status, content_range=content_range, offset=offset) == expected
