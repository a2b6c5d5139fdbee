"""Work that runs in the background between ``start`` and ``stop`` (health checks, the config
follower, the quality detector): one task, cancelled and awaited on stop."""

from __future__ import annotations

import asyncio
import contextlib


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
