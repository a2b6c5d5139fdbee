"""The store's upkeep in the background: the coming days' partitions made, and retention:
rows older than ``store.retention_days`` folded into hourly rollups and removed, rollups older
than ``store.rollup_retention_days`` removed, and so are stored Responses older than
``store.responses_retention_days``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from switchgear.background import Background
from switchgear.config import StoreConfig
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.migrations import placeholders
from switchgear.store.responses import SECONDS_PER_DAY, expire_responses
from switchgear.store.retention import ROLLUP_TABLE, cutoff

log = logging.getLogger("switchgear.store")

#: Seconds between two rounds: partitions are made days ahead, and retention works in days.
MAINTENANCE_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one round did: records folded into rollups (and removed), rollup rows removed,
    stored Responses removed."""

    folded: int
    rollups_removed: int
    responses_removed: int = 0


class StoreMaintenance(Background):
    """Runs ``round`` at start and every ``interval`` seconds after, on ``store`` with the
    retention ``settings`` gives at the time. A round that fails is logged and the next one
    tries again (a replica that cannot get the retention lock leaves that part to the one
    that has it)."""

    task_name = "switchgear-store-maintenance"

    def __init__(self, store: RecordStore, settings: Callable[[], StoreConfig],
                 interval: float = MAINTENANCE_INTERVAL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.interval = interval
        self.clock = clock

    async def start(self) -> None:
        """Start the rounds in the background."""
        self._launch()

    async def round(self) -> Upkeep:
        """Make the coming days' partitions, then apply retention as configured now."""
        now = self.clock()
        settings = self.settings()
        await self.store.prepare(now)
        folded = removed = 0
        if settings.retention_days is not None:
            folded = await self.store.expire(cutoff(now, settings.retention_days))
        if settings.rollup_retention_days is not None:
            removed = await self.store.execute(
                f"DELETE FROM {ROLLUP_TABLE} WHERE hour < {placeholders(self.store.dialect, 1)}",
                (cutoff(now, settings.rollup_retention_days),))
        responses = 0
        if settings.responses_retention_days is not None:
            responses = await expire_responses(
                self.store, now - settings.responses_retention_days * SECONDS_PER_DAY)
        if folded or removed or responses:
            log.info("retention: %d request records folded into hourly rollups and removed; "
                     "%d rollup rows removed; %d stored responses removed", folded, removed,
                     responses)
        return Upkeep(folded, removed, responses)

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except StoreUnavailable as error:
                log.warning("store maintenance failed; trying again in %gs: %s", self.interval,
                            error)
            except Exception:
                log.exception("store maintenance failed; trying again in %gs", self.interval)
            await asyncio.sleep(self.interval)
