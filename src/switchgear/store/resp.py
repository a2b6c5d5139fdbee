"""One pipelined connection to Redis for the Lua scripts on the hot path.

redis-py spends about 50 µs of CPU a command (a pooled connection checked out and back, a
timeout task, its packer and parser in Python). The scripts every request runs (limits, budgets,
the shared cache, fleet places) need none of that: commands go out on one connection as they
come, and the replies, which Redis sends in the same order, settle them in turn (about 9 µs a
command with 16 in flight). It speaks RESP2 to a plain TCP or Unix socket; redis-py keeps
everything else (TLS, pipelines, scans, admin commands).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class Incomplete(Exception):
    """The buffer holds only part of the next reply."""


def encode(args: tuple[object, ...]) -> bytes:
    """A command as a RESP array of bulk strings (numbers as redis-py writes them)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise DataError(f"Invalid input of type {type(arg).__name__!r} for Redis.")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buffer: bytearray, start: int) -> tuple[Any, int]:
    """The reply at ``start`` and where the next begins; Incomplete when it is not all in.
    An error reply is returned as a ResponseError (NoScriptError for NOSCRIPT), not raised."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise Incomplete
    kind, line, after = buffer[start], bytes(buffer[start + 1:end]), end + 2
    if kind == 0x24:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            raise Incomplete
        return bytes(buffer[after:after + size]), after + size + 2
    if kind == 0x3A:  # : integer
        return int(line), after
    if kind == 0x2B:  # + simple string
        return line, after
    if kind == 0x2D:  # - error
        message = line.decode("utf-8", "replace")
        return (NoScriptError if message.startswith("NOSCRIPT") else ResponseError)(message), after
    if kind == 0x2A:  # * array
        count = int(line)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    raise RedisConnectionError(f"Redis sent a reply of unknown kind {chr(kind)!r}")


class RespProtocol(asyncio.Protocol):
    """The connection: a command written as it comes, each reply settling the oldest command
    still waiting. Once it fails, every command waiting fails with it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.failure: Exception | None = None
        #: Whether a reply has come (a connection that served may since have gone stale).
        self.served = False
        self._buffer = bytearray()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while self._waiting:
                reply, start = parse(buffer, start)
                self.served = True
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
        except Incomplete:
            pass
        except (ValueError, RedisConnectionError) as error:
            self.fail(RedisConnectionError(f"Redis sent a reply that is not RESP: {error}"))
            return
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("Connection closed by the server."))

    def send(self, args: tuple[object, ...]) -> asyncio.Future[Any]:
        """Write a command; its reply (an error reply as an exception object) when it comes."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failure is not None or self.transport is None:
            waiter.set_exception(self.failure or RedisConnectionError("Not connected."))
            return waiter
        self._waiting.append(waiter)
        self.transport.write(encode(args))
        return waiter

    def fail(self, error: Exception) -> None:
        """Close the connection; every command waiting fails with ``error``."""
        if self.failure is None:
            self.failure = error
        if self.transport is not None:
            self.transport.abort()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)


class ScriptConnection:
    """EVALSHA (and SCRIPT LOAD when Redis has forgotten a script) on one pipelined
    connection, made on first use and again after a failure. Each call waits at most
    ``timeout`` seconds; past it the connection is dropped, as its replies can no longer be
    told apart. A call on a connection that had served before and fails before its reply is
    tried once on a fresh one (a Redis restart leaves such stale connections)."""

    def __init__(self, *, host: str = "localhost", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 timeout: float = 0.5) -> None:
        self.host, self.port, self.path = host, port, path
        self.setup = ([("AUTH", *((username,) if username else ()), password)]
                      if password else []) + ([("SELECT", db)] if db else [])
        self.timeout = timeout
        self._protocol: RespProtocol | None = None
        self._connecting: asyncio.Future[RespProtocol] | None = None

    async def run(self, sha: str, source: str, keys: Sequence[str], args: Sequence[object]
                  ) -> Any:
        """The script's result; RedisError (or OSError) when Redis fails or refuses."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self._call(command)
        except NoScriptError:
            await self._call(("SCRIPT", "LOAD", source))
            return await self._call(command)

    async def _call(self, command: tuple[object, ...]) -> Any:
        protocol = await self._connection()
        stale = protocol.served
        try:
            reply = await self._within(protocol, protocol.send(command))
        except RedisConnectionError:
            if not stale:
                raise
            protocol = await self._connection()
            reply = await self._within(protocol, protocol.send(command))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _within(self, protocol: RespProtocol, reply: asyncio.Future[Any]) -> Any:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, protocol.fail,
                                RedisTimeoutError("Timeout reading from Redis."))
        try:
            return await reply
        finally:
            timer.cancel()

    async def _connection(self) -> RespProtocol:
        protocol = self._protocol
        if protocol is not None and protocol.failure is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> RespProtocol:
        loop = asyncio.get_running_loop()
        protocol: RespProtocol | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if self.path is not None:
                    _, protocol = await loop.create_unix_connection(RespProtocol, self.path)
                else:
                    _, protocol = await loop.create_connection(RespProtocol, self.host, self.port)
                for command in self.setup:  # AUTH and SELECT, before any script
                    reply = await protocol.send(command)
                    if isinstance(reply, ResponseError):
                        raise reply
        except BaseException as error:
            if protocol is not None:
                protocol.fail(RedisConnectionError("The connection was not set up."))
            if isinstance(error, TimeoutError):
                raise RedisTimeoutError("Timeout connecting to Redis.") from None
            if isinstance(error, OSError):
                raise RedisConnectionError(
                    f"Error connecting to Redis ({type(error).__name__}).") from None
            raise
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        """Drop the connection; a later call connects again."""
        if self._protocol is not None:
            self._protocol.fail(RedisConnectionError("The connection was closed."))
            self._protocol = None
