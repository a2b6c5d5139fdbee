"""The upstream HTTP client's response as the backends read it: headers decoded on demand, a
body that arrived whole taken at once (a paused socket resumed for the next request), and each
request line sent for its own path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from test_http_client import Handler, deadline, read_request, serve

from switchgear.backends.http_client import HIGH_WATER_CHUNKS, ConnectionPool

__all__ = ["serve"]  # the fixture, shared with test_http_client

Serve = Callable[[Handler], Awaitable[ConnectionPool]]


def chunked(pieces: list[bytes]) -> bytes:
    """A chunked 200 answer made of ``pieces``, with a repeated header."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    return (b"HTTP/1.1 200 OK\r\nX-Twice: first\r\nX-TWICE: second\r\nRetry-After: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body)


async def test_headers_read_by_lower_case_name_the_last_repeated_one_winning(serve: Serve
                                                                             ) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked([b"{}"]))
        await writer.drain()
        await reader.read()

    pool = await serve(handler)
    response = await pool.request("GET", "/models", b"", deadline())
    assert await response.read() == b"{}"
    response.close()
    assert response.headers["x-twice"] == "second"
    assert response.headers["retry-after"] == "3"
    assert response.status == 200


async def test_a_body_of_many_chunks_read_whole_and_the_connection_kept(serve: Serve) -> None:
    pieces = [b"%d," % number for number in range(HIGH_WATER_CHUNKS * 3)]
    lines: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await read_request(reader)
            lines.append(request.split(b"\r\n", 1)[0])
            writer.write(chunked(pieces))
            await writer.drain()

    pool = await serve(handler)
    for path in ("/chat/completions", "/embeddings", "/chat/completions"):
        response = await pool.request("POST", path, b"{}", deadline())
        await asyncio.sleep(0.05)  # every chunk arrives (reading pauses past the high water)
        assert await response.read() == b"".join(pieces)
        response.close()
    assert lines == [b"POST /v1/chat/completions HTTP/1.1", b"POST /v1/embeddings HTTP/1.1",
                     b"POST /v1/chat/completions HTTP/1.1"]
    assert len(pool._idle) == 1  # one connection carried all three
