"""Each replica follows the applied config versions: it polls the store and adopts a newer one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from switchgear.background import Background
from switchgear.config import ConfigError
from switchgear.governance.versions import ConfigVersion, ConfigVersions
from switchgear.store.base import StoreUnavailable

log = logging.getLogger("switchgear.governance")


class ConfigFollower(Background):
    """Every ``interval()`` seconds, asks the store for the newest applied version and, when it
    is newer than the one serving, hands it to ``adopt``. One cheap indexed query per poll, off
    the request path."""

    task_name = "config-follower"

    def __init__(self, versions: ConfigVersions,
                 adopt: Callable[[ConfigVersion], Awaitable[None]],
                 interval: Callable[[], float]) -> None:
        self.versions = versions
        self.adopt = adopt
        self.interval = interval
        #: The newest version adopted, or tried and found unusable (not tried again).
        self.current = 0

    def start(self, current: int) -> None:
        """Follow from version ``current`` on, in the background."""
        self.current = current
        self._launch()

    async def check(self) -> None:
        """Adopt the newest applied version if it is newer than the current one."""
        if await self.versions.latest_number() <= self.current:
            return
        version = await self.versions.get()
        if version is None or version.version <= self.current:
            return
        try:
            await self.adopt(version)
        except ConfigError as error:
            log.error("config version %d cannot serve here, keeping version %d: %s",
                      version.version, self.current, error)
        self.current = version.version

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval())
            try:
                await self.check()
            except StoreUnavailable as error:  # keep serving this version; try again
                log.warning("cannot check for a new config version: %s", error)
            except Exception:  # e.g. a new backend failed to start: keep serving, try again
                log.exception("adopting a new config version failed")
