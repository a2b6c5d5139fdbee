"""Canary rollbacks that hold for the whole fleet and across restarts.

A canary guard (routing/experiments.py) judges only its own replica's traffic, and its rollback
lived in that process alone: the other replicas kept sending the canary its share, and a restart
sent it traffic again. Here a rollback becomes a change like any other: an applied change request
by ``canary-guard`` whose config is the newest version's with the canary's weight at 0, stored as
the next config version (every replica's follower adopts it within ``governance.poll_interval_s``)
and audited as ``canary.rollback``. It needs no approval: it only takes traffic away from the
variant the guard caught; putting the canary back is a reviewed change as usual.

Replicas that trip at once race for the next version number: one wins, and the others find the
canary already at weight 0 and stop. Written off the request path, in tasks ``stop`` ends.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from switchgear.config import Config, parse_config
from switchgear.governance.audit import AuditTrail
from switchgear.governance.changes import unified_diff
from switchgear.governance.versions import (
    ChangeRequest,
    ConfigVersion,
    ConfigVersions,
    config_text,
    serving_config,
)
from switchgear.store.base import StoreUnavailable

log = logging.getLogger("switchgear.governance")

#: The author and actor of rollbacks the canary guard makes.
CANARY_GUARD = "canary-guard"
#: Versions tried before giving up when other changes keep taking the next number.
MAX_TRIES = 10


def without_canary(config: Config, alias: str, variant: str) -> Config | None:
    """``config`` with ``variant``'s weight in ``alias``'s experiment at 0; None when it has no
    such variant or its weight is 0 already (nothing to roll back)."""
    model = config.models.get(alias)
    if model is None or not any(v.model == variant and v.weight > 0 for v in model.variants):
        return None
    data = config.model_dump(mode="json", exclude_defaults=True)
    for entry in data["models"][alias]["variants"]:
        if entry["model"] == variant:
            entry["weight"] = 0
    return parse_config(data, "the canary rollback")


class CanaryRollbacks:
    """Makes each canary rollback the next config version (``publish``), in the background."""

    def __init__(self, versions: ConfigVersions, audit: AuditTrail, local: Config) -> None:
        self.versions = versions
        self.audit = audit
        self.local = local
        self._writing: set[asyncio.Task[Any]] = set()

    def publish(self, alias: str, variant: str, reason: str) -> None:
        """Roll ``variant`` of ``alias`` back for the fleet, for ``reason`` (returns at once)."""
        task = asyncio.get_running_loop().create_task(
            self._write(alias, variant, reason), name=f"canary-rollback-{alias}")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, alias: str, variant: str, reason: str) -> None:
        try:
            change = await self.roll_back(alias, variant, reason)
        except StoreUnavailable as error:
            log.error("canary %s of %s is rolled back on this replica only: the store could not "
                      "take the rollback (%s); roll it back for the fleet with a config change",
                      variant, alias, error)
            return
        if change is None:
            return
        log.warning("canary %s of %s rolled back for every replica: config version %s (change "
                    "%s)", variant, alias, change.applied_version, change.change_id)
        await self.audit.record("canary.rollback", actor=CANARY_GUARD,
                                target=f"{alias}/{variant}",
                                details={"reason": reason, "version": change.applied_version,
                                         "change_id": change.change_id})

    async def roll_back(self, alias: str, variant: str, reason: str) -> ChangeRequest | None:
        """Store the newest version with ``variant``'s weight at 0 as the next one, and the
        applied change that made it; None when the newest version already has it at 0 (another
        replica won) or no longer has it."""
        for _ in range(MAX_TRIES):
            latest = await self.versions.get()
            if latest is None:
                return None
            base = serving_config(latest.config, self.local, f"config version {latest.version}")
            rolled_back = without_canary(base, alias, variant)
            if rolled_back is None:
                return None
            text = config_text(rolled_back)
            now, number = time.time(), latest.version + 1
            change = ChangeRequest(
                change_id="chg_" + secrets.token_hex(6), status="applied", author=CANARY_GUARD,
                message=f"canary {variant} of {alias} rolled back: {reason}", created_at=now,
                base_version=latest.version, config=text,
                diff=unified_diff(latest.config, text, f"version {latest.version}",
                                  f"version {number}"),
                sections="models", needs_approval=False, applied_version=number)
            version = ConfigVersion(number, text, change.change_id, CANARY_GUARD, now, False,
                                    latest.prompt_versions)
            if await self.versions.add_version(version):
                await self.versions.add_change(change)
                return change
        raise StoreUnavailable(f"could not store the canary rollback in {MAX_TRIES} tries")

    async def stop(self) -> None:
        """Let the rollbacks being written finish (they are short), then return."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
