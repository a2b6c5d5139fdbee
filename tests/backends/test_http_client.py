"""The upstream HTTP client against real sockets: keep-alive, stale connections, timeouts, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from switchgear.backends.http_client import (
    ConnectFailed,
    ConnectionClosed,
    ConnectionPool,
    MalformedResponse,
    ResponseTimeout,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (Content-Length bodies only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[ConnectionPool]]]:
    """Start a raw TCP server with the given connection handler; return a pool pointing at it."""
    servers: list[asyncio.Server] = []
    pools: list[ConnectionPool] = []
    handlers: list[asyncio.Task[None]] = []

    async def start(handler: Handler) -> ConnectionPool:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool(f"http://127.0.0.1:{port}/v1", connect_timeout=2,
                              headers={"Authorization": "Bearer k"})
        pools.append(pool)
        return pool

    yield start
    for pool in pools:
        pool.close()
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()


def deadline(seconds: float = 5) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_keep_alive_reuses_one_connection(serve: Callable[[Handler], Awaitable[ConnectionPool]]
                                                ) -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(OK)
        writer.close()

    pool = await serve(handler)
    for _ in range(5):
        response = await pool.request("POST", "/chat/completions", b'{"a": 1}', deadline())
        assert response.status == 200 and await response.read() == b"{}"
        response.close()
    assert connections == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer k\r\n" in seen[0] and seen[0].endswith(b'{"a": 1}')


async def test_a_stale_keep_alive_connection_is_replaced(
    serve: Callable[[Handler], Awaitable[ConnectionPool]]
) -> None:
    """The server closes each connection after one answer without saying so: the next request
    finds the pooled connection dead before any byte and goes out on a fresh one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        writer.close()

    pool = await serve(handler)
    for _ in range(3):
        response = await pool.request("POST", "/x", b"{}", deadline())
        assert await response.read() == b"{}"
        response.close()
        await asyncio.sleep(0.05)


async def test_chunked_body_streams_in_pieces(serve: Callable[[Handler], Awaitable[ConnectionPool]]
                                              ) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    pool = await serve(handler)
    response = await pool.request("POST", "/x", b"{}", deadline())
    chunks = [chunk async for chunk in response.iter_chunks()]
    response.close()
    assert chunks == [b"data: 1\n\n", b"data: 2\n\n"]


async def test_the_deadline_ends_a_silent_server(serve: Callable[[Handler], Awaitable[ConnectionPool]]
                                                 ) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    pool = await serve(handler)
    with pytest.raises(ResponseTimeout):
        await pool.request("POST", "/x", b"{}", deadline(0.2))


async def test_a_stream_that_stalls_hits_the_deadline(
    serve: Callable[[Handler], Awaitable[ConnectionPool]]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    pool = await serve(handler)
    response = await pool.request("POST", "/x", b"{}", deadline(0.3))
    with pytest.raises(ResponseTimeout):
        async for _ in response.iter_chunks():
            pass


async def test_a_cut_in_the_middle_is_not_mistaken_for_the_end(
    serve: Callable[[Handler], Awaitable[ConnectionPool]]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    pool = await serve(handler)
    response = await pool.request("POST", "/x", b"{}", deadline())
    with pytest.raises(ConnectionClosed) as closed:
        await response.read()
    assert not closed.value.before_response


async def test_garbage_is_a_malformed_response(serve: Callable[[Handler], Awaitable[ConnectionPool]]
                                               ) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP READY\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    pool = await serve(handler)
    with pytest.raises(MalformedResponse):
        await pool.request("POST", "/x", b"{}", deadline())


async def test_nobody_listening_is_connect_failed() -> None:
    pool = ConnectionPool("http://127.0.0.1:9/v1", connect_timeout=1, headers={})
    with pytest.raises(ConnectFailed):
        await pool.request("POST", "/x", b"{}", deadline())
