"""SLO alerts: their state, shared by replicas through the store, and webhook notifications."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from switchgear.sections.slo import Severity
from switchgear.store.base import RecordStore
from switchgear.store.migrations import placeholders

log = logging.getLogger("switchgear.slo")

SEVERITIES: tuple[Severity, ...] = ("page", "ticket")
FIRING, OK = "firing", "ok"


@dataclass(frozen=True, slots=True)
class AlertState:
    """One SLO alert: firing or ok, since when (seconds since the epoch)."""

    state: str
    since: float

    @property
    def firing(self) -> bool:
        """Whether the alert is firing."""
        return self.state == FIRING


class AlertStates:
    """Each SLO alert's state in the store's ``slo_alerts`` table. A change is a conditional
    update from the old state: of all replicas that see the same change, exactly one wins and
    notifies it, and a restart neither repeats a page nor forgets to resolve one."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        marks = placeholders(store.dialect, 6).split(", ")
        self._insert = ("INSERT INTO slo_alerts (slo, severity, state, since) VALUES "
                        f"({', '.join(marks[:4])}) ON CONFLICT (slo, severity) DO NOTHING")
        self._change = (f"UPDATE slo_alerts SET state = {marks[0]}, since = {marks[1]} "
                        f"WHERE slo = {marks[2]} AND severity = {marks[3]} AND state = {marks[4]}")

    async def prepare(self, names: list[str], now: float) -> None:
        """Add an ``ok`` row for every alert of ``names`` that has none yet."""
        for name in names:
            for severity in SEVERITIES:
                await self.store.execute(self._insert, (name, severity, OK, now))

    async def load(self) -> dict[tuple[str, str], AlertState]:
        """Every alert's state by (SLO name, severity)."""
        rows = await self.store.rows("SELECT slo, severity, state, since FROM slo_alerts")
        return {(slo, severity): AlertState(state, since) for slo, severity, state, since in rows}

    async def change(self, name: str, severity: str, firing: bool, now: float) -> bool:
        """Move an alert to firing (or ok); whether this call made the change."""
        new, old = (FIRING, OK) if firing else (OK, FIRING)
        return await self.store.execute(self._change, (new, now, name, severity, old)) == 1


def _timestamp(at: float | None) -> str:
    """RFC 3339 in UTC; Alertmanager's zero time for 'not ended'."""
    if at is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_message(labels: dict[str, str], annotations: dict[str, str], firing: bool,
                  starts_at: float, ends_at: float | None) -> dict[str, Any]:
    """A webhook body in Alertmanager's webhook format (version 4), one alert in it."""
    status = FIRING if firing else "resolved"
    return {
        "version": "4", "status": status, "receiver": "switchgear",
        "groupKey": f"{labels['slo']}/{labels['severity']}", "groupLabels": labels,
        "commonLabels": labels, "commonAnnotations": annotations,
        "alerts": [{"status": status, "labels": labels, "annotations": annotations,
                    "startsAt": _timestamp(starts_at), "endsAt": _timestamp(ends_at)}],
    }


class WebhookNotifier:
    """Posts alert messages as JSON from one background task, in order; a failed post is tried
    again ``attempts`` times in all with a doubling pause, then dropped and logged. The queue is
    bounded: when it is full the message is dropped and logged, nothing waits."""

    def __init__(self, attempts: int = 3, pause: float = 0.5, timeout: float = 5.0,
                 queue_size: int = 1000) -> None:
        self.attempts = attempts
        self.pause = pause
        self.timeout = timeout
        self.queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self.delivered = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    def send(self, url: str, what: str, message: dict[str, Any]) -> None:
        """Queue ``message`` for ``url``; ``what`` names it in logs (the URL never is)."""
        try:
            self.queue.put_nowait((url, what, message))
        except asyncio.QueueFull:
            self.failed += 1
            log.error("SLO alert %s not sent: the notification queue is full", what)

    def start(self) -> None:
        """Start delivering."""
        self._task = asyncio.create_task(self._deliver())

    async def _deliver(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url, what, message = await self.queue.get()
                try:
                    await self._post(session, url, what, message)
                finally:
                    self.queue.task_done()

    async def _post(self, session: aiohttp.ClientSession, url: str, what: str,
                    message: dict[str, Any]) -> None:
        pause = self.pause
        for attempt in range(1, self.attempts + 1):
            try:
                async with session.post(url, json=message) as response:
                    if response.status < 300:
                        self.delivered += 1
                        return
                    problem = f"status {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                problem = type(error).__name__
            if attempt < self.attempts:
                await asyncio.sleep(pause)
                pause *= 2
        self.failed += 1
        log.error("SLO alert %s not delivered to its webhook after %d attempts (%s)",
                  what, self.attempts, problem)

    async def stop(self, drain: float = 5.0) -> None:
        """Deliver what is queued (for at most ``drain`` seconds), then stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(drain):
                await self.queue.join()
        except TimeoutError:
            log.error("%d SLO alert notifications not sent at shutdown", self.queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
