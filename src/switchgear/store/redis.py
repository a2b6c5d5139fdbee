"""State shared by replicas in Redis, in one place: a client made to fail fast, Lua scripts run
by EVALSHA (on the client's own pipelined connection, store/resp.py, where the URL allows), and
the one error every Redis failure becomes (``StateUnavailable``, a 503 — never a 401).

The in-process implementations need none of this; the Redis ones (``RedisLimiter``,
``RedisBudgets``, the shared answer cache) share it so that an outage looks the same from every
part, and so that the gateway recovers by itself when Redis returns: the client's pool
reconnects on the next command and a script flushed by a Redis restart is loaded again on its
next call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Connection, Redis, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchgear.errors import Overloaded
from switchgear.store.resp import ScriptConnection

#: Seconds a client is told to wait after a state outage before it tries again.
OUTAGE_RETRY_AFTER = 1.0


class StateUnavailable(Overloaded):
    """The shared state (Redis) cannot be reached or answered wrongly: 503, try again shortly.

    Admission refuses rather than guesses: without its counters it can neither enforce a limit
    nor tell a valid caller from an invalid one, and a 401 would wrongly blame the key.
    """

    code = "state_unavailable"


class StateClient(Redis):
    """redis-py's client, with a pipelined connection of its own for the Lua scripts
    (``scripts``; None for a TLS URL, whose scripts go through redis-py)."""

    scripts: ScriptConnection | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the pool and the scripts' connection."""
        if self.scripts is not None:
            self.scripts.close()
        await super().aclose(close_connection_pool)


def connect_redis(url: str, *, timeout: float = 0.5) -> StateClient:
    """A Redis client for shared state that fails fast while Redis is away.

    Connecting and each command wait at most ``timeout`` seconds; a command is retried once
    without backoff, so a connection left stale by a Redis restart is replaced transparently
    instead of failing one request.
    """
    client = StateClient.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=0,
    )
    assert isinstance(client, StateClient)  # from_url makes the class it is called on
    pool = client.connection_pool
    if pool.connection_class in (Connection, UnixDomainSocketConnection):
        settings = pool.connection_kwargs
        client.scripts = ScriptConnection(
            host=settings.get("host", "localhost"), port=settings.get("port", 6379),
            path=settings.get("path"), db=int(settings.get("db") or 0), username=settings.get("username"),
            password=settings.get("password"), timeout=timeout)
    return client


def unavailable(error: BaseException) -> StateUnavailable:
    """The 503 a Redis failure becomes; its text names the failure's class, never a URL."""
    return StateUnavailable(
        f"Shared state is unavailable ({type(error).__name__}); try again shortly.",
        retry_after=OUTAGE_RETRY_AFTER,
    )


class LuaScript:
    """One Lua script run atomically by EVALSHA, loaded again if Redis has forgotten it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Redis, keys: Sequence[str], args: Sequence[str | float | int]) -> Any:
        """Run the script on ``keys`` with ``args``; any Redis failure raises ``StateUnavailable``."""
        scripts = client.scripts if isinstance(client, StateClient) else None
        try:
            if scripts is not None:
                return await scripts.run(self.sha, self.source, keys, args)
            try:
                return await client.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(self.source)
                return await client.evalsha(self.sha, len(keys), *keys, *args)
        except (RedisError, OSError) as error:
            raise unavailable(error) from error


def text(value: Any) -> str:
    """A Redis reply as text, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
