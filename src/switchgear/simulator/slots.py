"""A fixed number of sequence slots with a first-come-first-served waiting line."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class SlotPool:
    """Grants at most ``size`` concurrent holders; the rest wait in arrival order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._busy = 0
        self._peak = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> int:
        """Slots held now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return len(self._waiting)

    @property
    def peak(self) -> int:
        """The most requests holding or waiting for a slot at once so far."""
        return self._peak

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block, waiting in line for it if needed."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def wait_idle(self) -> None:
        """Return once no slot is held and nobody waits."""
        await self._idle.wait()

    async def _acquire(self) -> None:
        self._idle.clear()
        self._peak = max(self._peak, self._busy + len(self._waiting) + 1)
        if self._busy < self.size and not self._waiting:
            self._busy += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self._release()
            else:
                if turn in self._waiting:  # _release may already have skipped it
                    self._waiting.remove(turn)
                self._mark_idle_if_empty()
            raise

    def _release(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes straight to the next in line
                return
        self._busy -= 1
        self._mark_idle_if_empty()

    def _mark_idle_if_empty(self) -> None:
        if self._busy == 0 and not self._waiting:
            self._idle.set()
