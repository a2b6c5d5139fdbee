"""Active health checks: ask every deployment, on an interval, whether it can take requests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from switchgear.background import Background
from switchgear.routing.deployment import Deployment

log = logging.getLogger("switchgear.routing")

#: Seconds one check may take before it counts as failed.
CHECK_TIMEOUT = 2.0


class HealthChecker(Background):
    """Checks each deployment every ``interval`` seconds in the background: a failed check
    ejects it; a passed check lets an ejected one's probe through now (the probe, a real
    request, readmits it)."""

    task_name = "health-checks"

    def __init__(self, deployments: Sequence[Deployment], interval: float) -> None:
        self.deployments = list(deployments)
        self.interval = interval

    def start(self) -> None:
        """Start checking in the background."""
        self._launch()

    async def check_all(self) -> None:
        """Check every deployment once, concurrently."""
        await asyncio.gather(*(self._check(d) for d in self.deployments))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_all()

    async def _check(self, deployment: Deployment) -> None:
        health = deployment.health
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await deployment.backend.check()
        except Exception as error:  # any failure to answer is a failed check
            was = health.state
            health.check_failed(time.monotonic(), f"{type(error).__name__}: {error}")
            if health.state is not was:
                log.warning("deployment %s/%s ejected: %s", deployment.alias, deployment.name,
                            health.reason)
            return
        if health.check_passed(time.monotonic()):
            log.info("deployment %s/%s passed its health check: the next request probes it",
                     deployment.alias, deployment.name)
