"""The httpx contract registry/responses.py relies on: where a read body lives (the reason
pyproject.toml bounds httpx below 1), checked against the installed httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from replicator.registry.responses import MAX_ERROR_BODY, read_capped

URL = "http://127.0.0.1:5000/v2/team/app/manifests/v1"


class _Stream(httpx.AsyncByteStream):
    """A body that can be read once, as a network stream can."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.reads = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reads += 1
        if self.reads > 1:
            raise AssertionError("the stream was read twice")
        yield self._body


def _streamed(status: int, body: bytes) -> tuple[httpx.Response, _Stream]:
    stream = _Stream(body)
    request = httpx.Request("GET", URL)
    return httpx.Response(status, stream=stream, request=request), stream


class TestReadBodyContract:
    async def test_unread_body_raises_response_not_read(self) -> None:
        """A streamed response's content raises ResponseNotRead until read (the public check)."""
        response, _ = _streamed(200, b"{}")
        with pytest.raises(httpx.ResponseNotRead):
            _ = response.content

    async def test_capped_read_serves_content_text_json_and_aread(self) -> None:
        """After read_capped, content, text, json() and aread() all return the body read once."""
        response, stream = _streamed(200, b'{"tags": ["v1"]}')
        read = await read_capped(response, 1024)
        assert read.content == b'{"tags": ["v1"]}'
        assert read.text == '{"tags": ["v1"]}'
        assert read.json() == {"tags": ["v1"]}
        assert await read.aread() == b'{"tags": ["v1"]}'
        assert stream.reads == 1

    async def test_failure_body_is_cut_to_the_error_cap(self) -> None:
        """A failure's body kept by read_capped is its first MAX_ERROR_BODY bytes."""
        response, _ = _streamed(500, b"x" * (MAX_ERROR_BODY + 10))
        read = await read_capped(response, 1 << 20)
        assert read.content == b"x" * MAX_ERROR_BODY
