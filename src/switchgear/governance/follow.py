"""Each replica follows the control plane in the shared store: a ``Follower`` (store/follow.py)
polls it off the request path and acts only on a change. ``ConfigFollower`` adopts a newer
applied config version; the key ring's follower (admission/keys.py) reloads the keys when they
changed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from switchgear.config import ConfigError
from switchgear.governance.versions import ConfigVersion, ConfigVersions
from switchgear.store.base import StoreUnavailable
from switchgear.store.follow import Follower

log = logging.getLogger("switchgear.governance")


class ConfigFollower(Follower):
    """Every ``interval()`` seconds, asks the store for the newest applied version and, when it
    is newer than the one serving, hands it to ``adopt``. One cheap indexed query per poll, off
    the request path.

    A version that cannot serve here (``adopt`` raises ConfigError) is said once, with what to
    do, and not tried again; one that failed otherwise (a new backend would not start) is tried
    again at every poll, its traceback logged the first time only."""

    task_name = "config-follower"
    what = "a new config version"

    def __init__(self, versions: ConfigVersions,
                 adopt: Callable[[ConfigVersion], Awaitable[None]],
                 interval: Callable[[], float]) -> None:
        super().__init__(interval)
        self.versions = versions
        self.adopt = adopt
        #: The newest version adopted, or tried and found unusable (not tried again).
        self.current = 0
        #: The version serving (``current`` unless that one could not serve).
        self.serving = 0
        #: The version whose failure to start was last logged (not logged again).
        self.failed_version: int | None = None

    def start(self, current: int, serving: int | None = None) -> None:
        """Follow from version ``current`` on (``serving`` serves: ``current`` unless that one
        could not), in the background."""
        self.current = current
        self.serving = current if serving is None else serving
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
            log.error("%s", unusable(version.version, self.serving, error))
        else:
            self.serving = version.version
        self.current = version.version

    async def failed(self) -> None:
        """A version that failed to start (e.g. a new backend): serve on, try it again at every
        poll, log its traceback the first time only."""
        latest = await self._latest()
        if latest != self.failed_version:
            self.failed_version = latest
            log.exception("config version %s could not start (version %d serves on); "
                          "trying again every %gs", latest, self.serving, self.interval())

    async def _latest(self) -> int | None:
        """The newest version's number, None when the store cannot say."""
        try:
            return await self.versions.latest_number()
        except StoreUnavailable:
            return None


def unusable(version: int, serving: int, error: ConfigError) -> str:
    """What to say when config ``version`` cannot serve on this replica: why, which version
    serves instead, and how to fix it."""
    return (f"config version {version} cannot serve on this replica, so version {serving} "
            f"serves: {error}. To fix it, roll back (`switchgear config rollback {serving}`) or "
            "propose a corrected config (`switchgear config propose FILE`).")
