"""In-flight coalescing: identical requests being answered now share one call to the model.

The first request of a key leads: its call to the model becomes a ``Call`` that every identical
request arriving meanwhile follows — a plain follower waits for the whole answer, a streamed one
receives the chunks as they come. When the call fails before a follower received anything, the
follower is told ``LeaderFailed`` and tries again (one of them leads the next call)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from switchgear.cache.exact import Entry

Body = dict[str, Any]


class LeaderFailed(Exception):
    """The call being waited on failed before this follower got anything: try again."""


class Call:
    """One answer being made: the chunks so far, then the whole entry or the failure."""

    __slots__ = ("_changed", "chunks", "done", "entry", "error", "streamed")

    def __init__(self, streamed: bool) -> None:
        self.streamed = streamed
        self.chunks: list[Body] = []
        self.entry: Entry | None = None
        self.error: BaseException | None = None
        self.done = False
        self._changed = asyncio.Event()

    def push(self, chunk: Body) -> None:
        """One more chunk of a streamed answer."""
        self.chunks.append(chunk)
        self._wake()

    def finish(self, entry: Entry | None, error: BaseException | None = None) -> None:
        """The call ended: with the whole answer (None when it could not be kept) or ``error``."""
        self.done, self.entry, self.error = True, entry, error
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def outcome(self) -> Entry:
        """The whole answer, once made; ``LeaderFailed`` if the call failed or kept nothing."""
        while not self.done:
            await self._changed.wait()
        if self.entry is None:
            raise LeaderFailed()
        return self.entry

    async def started(self) -> None:
        """Wait for the first chunk (or the end); ``LeaderFailed`` if the call failed first."""
        while not self.chunks and not self.done:
            await self._changed.wait()
        if not self.chunks and self.error is not None:
            raise LeaderFailed()

    async def follow(self, leader: bool) -> AsyncIterator[Body]:
        """The streamed chunks, from the first, as they come. If the call fails, the leader and
        a follower that already received chunks get its error; any other follower
        ``LeaderFailed``."""
        sent = 0
        while True:
            while sent < len(self.chunks):
                yield self.chunks[sent]
                sent += 1
            if self.done:
                break
            await self._changed.wait()
        if self.error is not None:
            raise self.error if leader or sent else LeaderFailed()


class InFlight:
    """The calls being made now, by key."""

    def __init__(self) -> None:
        self._calls: dict[str, Call] = {}

    def join(self, key: str, streamed: bool) -> tuple[Call, bool]:
        """The call for ``key`` and whether the caller leads it (no identical call was running;
        ``streamed`` says how the leader's answer will come)."""
        call = self._calls.get(key)
        if call is not None:
            return call, False
        call = self._calls[key] = Call(streamed)
        return call, True

    def finish(self, key: str, entry: Entry | None, error: BaseException | None = None) -> None:
        """End the call for ``key``; later identical requests start afresh (or hit the cache)."""
        call = self._calls.pop(key, None)
        if call is not None:
            call.finish(entry, error)

    def __len__(self) -> int:
        return len(self._calls)
