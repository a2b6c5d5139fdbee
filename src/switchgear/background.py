"""Starting and stopping: the one protocol every part a runtime owns follows (``Part``), the
adapter for parts whose own calls differ (``Calls``), parts in order (``Parts``) or at once
(``Together``); and work that runs in the background between ``start`` and ``stop`` (health
checks, the followers, the quality detector: ``Background``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("switchgear")


class Part(Protocol):
    """Something started once and stopped once. ``start`` either starts it or raises, having
    released what it took; ``stop`` releases what ``start`` took."""

    async def start(self) -> None:
        """Acquire and start."""

    async def stop(self) -> None:
        """Stop and release."""


@dataclass(frozen=True, slots=True)
class Calls:
    """A part made of its own calls, each sync or async, either absent (nothing to do):
    ``Calls("record writer", writer.start, writer.close)``."""

    name: str
    on_start: Callable[[], Awaitable[None] | None] | None = None
    on_stop: Callable[[], Awaitable[None] | None] | None = None

    async def start(self) -> None:
        """Call ``on_start``."""
        await _call(self.on_start)

    async def stop(self) -> None:
        """Call ``on_stop``."""
        await _call(self.on_stop)

    def __str__(self) -> str:
        return self.name


async def _call(call: Callable[[], Awaitable[None] | None] | None) -> None:
    result = call() if call is not None else None
    if result is not None:
        await result


class Parts:
    """Parts started in the order given (``None``: not there) and stopped in reverse. When one
    fails to start (or the start is cancelled), those already started are stopped and the
    error raised: a failed ``start`` leaves nothing running."""

    def __init__(self, *parts: Part | None) -> None:
        self.parts = [part for part in parts if part is not None]

    async def start(self) -> None:
        """Start each part in turn."""
        for count, part in enumerate(self.parts):
            try:
                await part.start()
            except BaseException:
                await Parts(*self.parts[:count]).stop()
                raise

    async def stop(self) -> None:
        """Stop each part, the last first; one that fails is logged and the rest still stop."""
        for part in reversed(self.parts):
            try:
                await part.stop()
            except Exception:
                log.exception("%s did not stop cleanly", part)


class Together:
    """Parts started at once and stopped at once. The start waits for every one of them; when
    one failed (or the start is cancelled), those that started are stopped and the first error
    raised."""

    def __init__(self, *parts: Part) -> None:
        self.parts = parts

    async def start(self) -> None:
        """Start every part concurrently."""
        if not self.parts:
            return
        starting = [asyncio.ensure_future(part.start()) for part in self.parts]
        try:
            await asyncio.gather(*starting, return_exceptions=True)
        finally:  # when cancelled too: gather returns once every start has ended
            started = [part for part, task in zip(self.parts, starting, strict=True)
                       if task.done() and not task.cancelled() and task.exception() is None]
            if len(started) < len(starting):
                await Together(*started).stop()
        for task in starting:
            task.result()  # the first failure

    async def stop(self) -> None:
        """Stop every part concurrently; one that fails is logged and the rest still stop."""
        outcomes = await asyncio.gather(*(part.stop() for part in self.parts),
                                        return_exceptions=True)
        for part, outcome in zip(self.parts, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("%s did not stop cleanly", part, exc_info=outcome)


class Background:
    """A loop (``_run``) in a task of its own, named ``task_name``."""

    task_name = "background"
    _task: asyncio.Task[None] | None = None

    def _launch(self) -> None:
        """Start ``_run`` in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Stop the loop and wait until it has."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        raise NotImplementedError
