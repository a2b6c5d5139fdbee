"""The Lua scripts' own pipelined Redis connection (store/resp.py), against real redis-servers:
the shared one, and ones of the test's own (with a password, on a Unix socket, stopped)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchgear.store.redis import LuaScript, StateClient, StateUnavailable, connect_redis
from switchgear.store.resp import RespProtocol, encode

from servers import REDIS_URL, OwnRedis

#: Every kind of reply a script gives: integers, text with CRLF and NUL inside, an empty
#: string, nested arrays, a status, and a big value that arrives in many reads.
KINDS = LuaScript("""
return {42, -7, ARGV[1], '', {1, {'deep', ARGV[2]}}, redis.status_reply('FINE'),
        string.rep('x', tonumber(ARGV[3]))}
""")
ECHO = LuaScript("return ARGV[1]")
NOTHING = LuaScript("return redis.call('GET', KEYS[1])")
FAILS = LuaScript("return redis.error_reply('this script refuses')")
SETS = LuaScript("redis.call('SET', KEYS[1], ARGV[1]); return 1")


async def test_replies_are_those_redis_py_reads() -> None:
    client = connect_redis(REDIS_URL)
    assert client.scripts is not None  # the lean connection serves a plain URL
    plain = Redis.from_url(REDIS_URL, protocol=2)
    args = ["a\r\nb\x00c", "ü", 1_000_000]
    try:
        ours = await KINDS(client, [], args)
        theirs = await plain.evalsha(KINDS.sha, 0, *args)
        assert ours == theirs
        assert ours[:5] == [42, -7, b"a\r\nb\x00c", b"", [1, [b"deep", "ü".encode()]]]
        assert len(ours[6]) == 1_000_000
        assert await NOTHING(client, [f"sgtest:missing:{time.time()}"], []) is None
    finally:
        await client.aclose()
        await plain.aclose()


async def test_many_calls_in_flight_each_get_their_own_reply() -> None:
    client = connect_redis(REDIS_URL)
    try:
        replies = await asyncio.gather(*(ECHO(client, [], [f"call {n}"]) for n in range(500)))
        assert replies == [f"call {n}".encode() for n in range(500)]
    finally:
        await client.aclose()


async def test_a_script_redis_forgot_is_loaded_again(redis_client: StateClient) -> None:
    assert await ECHO(redis_client, [], ["before"]) == b"before"
    plain = Redis.from_url(REDIS_URL)
    try:
        await plain.script_flush()
    finally:
        await plain.aclose()
    assert await ECHO(redis_client, [], ["after"]) == b"after"


async def test_a_script_error_is_a_503_and_the_connection_goes_on(
        redis_client: StateClient) -> None:
    with pytest.raises(StateUnavailable) as caught:
        await FAILS(redis_client, [], [])
    assert isinstance(caught.value.__cause__, ResponseError)
    assert await ECHO(redis_client, [], ["still here"]) == b"still here"


def test_a_reply_read_byte_by_byte_settles_only_when_whole() -> None:
    """A stand-in transport (it records writes): a real socket cannot be made to deliver one
    byte at a time."""

    async def main() -> None:
        protocol = RespProtocol()
        sent: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                sent.append(data)

        protocol.transport = Transport()  # type: ignore[assignment]  # records writes only
        first, second = protocol.send(("GET", "a")), protocol.send(("GET", "b"))
        assert b"".join(sent) == encode(("GET", "a")) + encode(("GET", "b"))
        replies = b"*2\r\n$3\r\nx\r\n\r\n:5\r\n$-1\r\n"
        for index in range(len(replies)):
            protocol.data_received(replies[index:index + 1])
            assert first.done() == (index >= 16)
        assert first.result() == [b"x\r\n", 5]
        assert second.result() is None

    asyncio.run(main())


def test_arguments_redis_cannot_take_are_refused() -> None:
    assert encode(("SET", b"k", 1.5, 2)) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n$1\r\n2\r\n"
    for wrong in (True, None, [1]):
        with pytest.raises(DataError):
            encode(("SET", "k", wrong))


async def test_password_and_database_come_from_the_url(tmp_path: Path) -> None:
    async with OwnRedis(tmp_path, password="s3cret") as server:
        client = connect_redis(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        wrong = connect_redis(f"redis://:wrong@127.0.0.1:{server.port}/3")
        plain = Redis(port=server.port, password="s3cret", db=3)
        try:
            assert await SETS(client, ["sgtest:db"], ["in three"]) == 1
            assert await plain.get("sgtest:db") == b"in three"
            with pytest.raises(StateUnavailable):
                await SETS(wrong, ["sgtest:db"], ["refused"])
        finally:
            await client.aclose()
            await wrong.aclose()
            await plain.aclose()


async def test_a_unix_socket_url(tmp_path: Path) -> None:
    socket = tmp_path / "redis.sock"
    async with OwnRedis(tmp_path, "--unixsocket", str(socket)):
        client = connect_redis(f"unix://{socket}?db=0")
        try:
            assert client.scripts is not None and client.scripts.path == str(socket)
            assert await ECHO(client, [], ["over the socket"]) == b"over the socket"
        finally:
            await client.aclose()


async def test_a_hung_redis_times_out_and_the_next_call_connects_again(
        own_redis: OwnRedis) -> None:
    client = connect_redis(f"redis://127.0.0.1:{own_redis.port}/0", timeout=0.3)
    try:
        assert await ECHO(client, [], ["up"]) == b"up"
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            calls = await asyncio.gather(*(ECHO(client, [], ["hung"]) for _ in range(5)),
                                         return_exceptions=True)
            waited = time.monotonic() - started
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        assert all(isinstance(call, StateUnavailable) for call in calls)
        assert all(isinstance(call.__cause__, RedisTimeoutError) for call in calls
                   if isinstance(call, StateUnavailable))
        assert waited < 2.0  # each call's bound, not a hang
        assert await ECHO(client, [], ["back"]) == b"back"
    finally:
        await client.aclose()


async def test_a_tls_url_runs_its_scripts_through_redis_py() -> None:
    client = connect_redis("rediss://127.0.0.1:6379/0")
    try:
        assert client.scripts is None
    finally:
        await client.aclose()
