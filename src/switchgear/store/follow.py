"""Following the store: a background poll that asks one cheap question and acts only on change
(config versions, API keys)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from switchgear.background import Background
from switchgear.store.base import StoreUnavailable

log = logging.getLogger("switchgear.store")


class Follower(Background):
    """Every ``interval()`` seconds, runs ``check``: one cheap query to the store, and work only
    when what it follows changed. While the store cannot answer, the replica keeps what it has
    and asks again at the next poll; any other failure goes to ``failed``."""

    #: What is followed, for the logs.
    what = "changes"

    def __init__(self, interval: Callable[[], float]) -> None:
        self.interval = interval

    async def check(self) -> None:
        """Ask the store whether anything changed, and act on it."""
        raise NotImplementedError

    async def failed(self) -> None:
        """``check`` raised (the exception is being handled): log it with its traceback."""
        log.exception("cannot follow %s; trying again every %gs", self.what, self.interval())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            try:
                await self.check()
            except StoreUnavailable as error:  # keep what we have; try again
                log.warning("cannot check for %s: %s", self.what, error)
            except Exception:
                await self.failed()
