"""The batch runner: sends the lines of the Batch API's batches through the serving pipeline at
the batch tier, only into spare capacity, on any replica.

Lines are claimed a few at a time with a lease in the store (``lease_owner``, ``lease_until``;
on PostgreSQL in one ``UPDATE ... WHERE (batch_id, line_no) IN (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING``, so replicas share the work without waiting on each other; on SQLite the
same single statement, atomic on its own). A running line's lease is renewed while it runs; a
replica that dies stops renewing, and once its leases have passed any replica claims those lines
again. Each line runs as a request of the batch's key and tenant (its scopes, limits, budgets,
guards, cache, routing, record and cost apply), at priority ``batch`` through ``api``
``openai.batch`` (the ledger takes a deployment's ``batch_discount`` off those). Its result is
written as soon as it is known, only while this replica still holds the line's lease
(``WHERE lease_owner = me``): a finished line is never lost to a crash, and never has two
results. A line refused for a limit (429) or shed (503) goes back to pending for later; any other
error is its final answer (``failed``).

Spare capacity: before each claim the runner reads the live load. While any interactive or
standard request waits at the priority gate it claims nothing and backs off (exponentially, with
jitter, up to ``batch.max_backoff_s``); otherwise it runs at most ``batch.max_share`` of each
deployment's ``max_concurrency`` (less what is in flight there already), of the gate's free
places and ``batch.max_in_flight`` lines, and it leaves ``batch.reserve`` of the places (0.3:
the deployments' together, and the gate's) free for interactive and standard peaks, since a
batch line holds its place until it ends. On the embedded engine a batch-tier sequence is also
paused, or preempted, whenever a higher tier needs its slot (engine/scheduler.py): the runner
leaves that as it is. Once no line of a batch is pending or running, any replica finalizes it
(batches.py writes the output and error files; one replica wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from switchgear.admission.keys import ApiKey, KeyRing
from switchgear.admission.tiers import GateSnapshot, TierGate
from switchgear.background import Background
from switchgear.batch.batches import OPEN_MODE_KEY, Batches
from switchgear.config import BatchConfig, Config
from switchgear.errors import AuthenticationFailed, SwitchgearError, internal_error
from switchgear.exchange import Exchange, Operation
from switchgear.ledger.cost import BATCH_API
from switchgear.pipeline import Handler, close_stream
from switchgear.pipeline.admit import identify
from switchgear.pipeline.record import Recorder
from switchgear.routing.deployment import Deployment, FleetDeployment
from switchgear.routing.router import Router
from switchgear.sections.tiers import reserved
from switchgear.store.base import RecordStore, StoreUnavailable
from switchgear.store.migrations import Dialect, numbered
from switchgear.telemetry.metrics import BatchSeries
from switchgear.telemetry.tracing import Tracer

log = logging.getLogger("switchgear.batch")

#: The tier every batch line runs at.
BATCH_TIER = "batch"
#: The tiers whose waiting requests make the runner stand back.
HIGHER_TIERS = ("interactive", "standard")
#: Statuses that mean "not now" (a limit, a shed): the line is tried again later.
RETRY_LATER = frozenset({429, 503})
#: The operation each batch endpoint runs.
OPERATIONS = {"/v1/chat/completions": Operation.CHAT,
              "/v1/completions": Operation.COMPLETIONS,
              "/v1/embeddings": Operation.EMBEDDINGS}
#: Batches whose owner a runner remembers at most (forgotten all at once past it).
MAX_OWNERS_KEPT = 1024
#: Batch statuses whose lines the runner works on, and those it may finalize.
RUNNING_STATUS = "in_progress"
FINISHING_STATUSES = ("in_progress", "cancelling", "finalizing")

ExchangeMaker = Callable[[Operation, Any, str], Exchange]
LineState = Literal["done", "failed", "retry"]


def replica_id() -> str:
    """Who holds a lease: this host, this process and a random part (a restarted process with
    a recycled pid is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ServingParts(Protocol):
    """What the runner uses of the config version serving now (gateway/state.py's Serving)."""

    @property
    def version(self) -> int:
        """The config version."""

    @property
    def config(self) -> Config:
        """Its config (the runner reads ``batch``)."""

    @property
    def router(self) -> Router:
        """Its deployments."""

    @property
    def pipeline(self) -> Handler:
        """The pipeline a line runs through."""

    @property
    def recorder(self) -> Recorder:
        """Records a line refused before the pipeline."""

    @property
    def gate(self) -> TierGate | None:
        """The priority gate (None: no tiers)."""

    def enter(self) -> None:
        """A request starts on these parts."""

    def leave(self) -> None:
        """A request on these parts ended."""


@dataclass(frozen=True, slots=True)
class ClaimedLine:
    """A line this replica holds the lease of."""

    batch_id: str
    line_no: int
    custom_id: str
    body: str
    attempts: int


@dataclass(frozen=True, slots=True)
class BatchOwner:
    """Whose batch it is and what it calls: every line runs as this key and tenant."""

    tenant: str
    key_id: str | None
    endpoint: str


@dataclass(frozen=True, slots=True)
class LineResult:
    """How a line ended: ``done`` (a 200 and its body), ``failed`` (its final error) or
    ``retry`` (refused for now: pending again after ``retry_after`` seconds)."""

    state: LineState
    status_code: int
    response: dict[str, Any]
    request_id: str
    retry_after: float = 0.0

    @classmethod
    def of_error(cls, error: SwitchgearError, request_id: str) -> LineResult:
        """The result a request that raised ``error`` leaves."""
        state: LineState = "retry" if error.status in RETRY_LATER else "failed"
        return cls(state, error.status, error.body(), request_id, error.retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class SpareCapacity:
    """What the live load leaves for batch lines: ``places`` more may start now; ``contended``
    when interactive or standard requests wait (then ``places`` is 0)."""

    places: int
    contended: bool


def spare_capacity(gate: GateSnapshot | None, deployments: Iterable[Deployment],
                   settings: BatchConfig, running: int) -> SpareCapacity:
    """The places batch lines may take now, ``running`` of this runner's being in flight: none
    while a higher tier waits at the gate; else the least of the deployments' free places less
    the ``reserve`` kept for higher tiers' peaks, their ``max_share`` less what runs, the gate's
    free places for the batch tier (less its headroom, which holds the reserve: the gate is
    built from ``TierConfig.reserving``) and ``max_in_flight`` less what runs. A fleet-wide
    ``max_concurrency`` counts the fleet's requests as last seen; ``max_share`` and
    ``max_in_flight`` hold per replica."""
    if gate is not None and any(gate.tiers[tier].waiting for tier in HIGHER_TIERS):
        return SpareCapacity(0, contended=True)
    places = busy = share = 0
    for deployment in deployments:
        limit = deployment.config.max_concurrency
        places += limit
        busy += min(limit, deployment.places.demand if isinstance(deployment, FleetDeployment)
                    else deployment.in_flight)
        share += max(1, int(limit * settings.max_share))
    limits = [places - reserved(places, settings.reserve) - busy, share - running,
              settings.max_in_flight - running]
    if gate is not None:
        limits.append(gate.capacity - gate.tiers[BATCH_TIER].headroom - gate.in_use)
    return SpareCapacity(max(0, min(limits)), contended=False)


class Backoff:
    """Exponential backoff with jitter: each ``delay`` doubles from ``base`` up to ``cap``,
    then is drawn between half and all of that; ``reset`` starts over."""

    def __init__(self) -> None:
        self.failures = 0
        self._random = random.Random()

    def delay(self, base: float, cap: float) -> float:
        """The next pause, in seconds."""
        ceiling = min(cap, base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return ceiling * self._random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """The next delay is ``base`` again."""
        self.failures = 0


@dataclass(frozen=True, slots=True)
class LineSQL:
    """The runner's statements, in one dialect."""

    claim: str
    owners: str
    finish: str
    requeue: str
    renew: str
    release: str
    recount: str
    cancel: str
    finishable: str
    statuses: str

    @classmethod
    def of(cls, dialect: Dialect) -> LineSQL:
        """The statements for ``dialect``."""
        skip_locked = " FOR UPDATE OF l SKIP LOCKED" if dialect == "postgresql" else ""
        sql = {
            # owner, lease_until, now, now, limit
            "claim": "UPDATE batch_lines SET state = 'running', lease_owner = ?, "
                     "lease_until = ?, attempts = attempts + 1 "
                     "WHERE (batch_id, line_no) IN ("
                     "SELECT l.batch_id, l.line_no FROM batch_lines l "
                     "JOIN batches b ON b.batch_id = l.batch_id "
                     f"WHERE b.status = '{RUNNING_STATUS}' "
                     "AND l.state IN ('pending', 'running') AND ("
                     "(l.state = 'pending' AND (l.lease_until IS NULL OR l.lease_until <= ?)) "
                     "OR (l.state = 'running' AND l.lease_until < ?)) "
                     f"LIMIT ?{skip_locked}) "
                     "RETURNING batch_id, line_no, custom_id, body, attempts",
            "owners": "SELECT batch_id, tenant, key_id, endpoint FROM batches "
                      "WHERE batch_id = ?",
            # state, status_code, response, request_id, done_at, batch_id, line_no, owner
            "finish": "UPDATE batch_lines SET state = ?, status_code = ?, response = ?, "
                      "error = NULL, request_id = ?, done_at = ?, lease_until = NULL "
                      "WHERE batch_id = ? AND line_no = ? AND lease_owner = ? "
                      "AND state = 'running'",
            # not before, batch_id, line_no, owner
            "requeue": "UPDATE batch_lines SET state = 'pending', lease_owner = NULL, "
                       "lease_until = ? WHERE batch_id = ? AND line_no = ? "
                       "AND lease_owner = ? AND state = 'running'",
            # lease_until, owner
            "renew": "UPDATE batch_lines SET lease_until = ? "
                     "WHERE lease_owner = ? AND state = 'running'",
            # owner
            "release": "UPDATE batch_lines SET state = 'pending', lease_owner = NULL, "
                       "lease_until = NULL WHERE lease_owner = ? AND state = 'running'",
            # batch_id, batch_id, batch_id
            "recount": "UPDATE batches SET "
                       "completed = (SELECT count(*) FROM batch_lines "
                       "WHERE batch_id = ? AND state = 'done'), "
                       "failed = (SELECT count(*) FROM batch_lines "
                       "WHERE batch_id = ? AND state = 'failed') WHERE batch_id = ?",
            # now, now: the pending lines of a cancelled batch (some came back from a retry
            # after the cancel), and its running ones whose replica is gone
            "cancel": "UPDATE batch_lines SET state = 'cancelled', lease_owner = NULL, "
                      "lease_until = NULL, done_at = ? WHERE batch_id IN "
                      "(SELECT batch_id FROM batches WHERE status = 'cancelling') "
                      "AND (state = 'pending' OR (state = 'running' AND lease_until < ?))",
            "finishable": "SELECT b.batch_id FROM batches b WHERE b.status IN "
                          f"({', '.join(repr(s) for s in FINISHING_STATUSES)}) "
                          "AND NOT EXISTS (SELECT 1 FROM batch_lines l "
                          "WHERE l.batch_id = b.batch_id "
                          "AND l.state IN ('pending', 'running'))",
            "statuses": "SELECT status, count(*) FROM batches GROUP BY status",
        }
        return cls(**{name: numbered(dialect, text) for name, text in sql.items()})


class BatchRunner(Background):
    """Runs batch lines on this replica, in the background between ``start`` and ``stop``."""

    task_name = "batch-runner"

    def __init__(self, store: RecordStore, serving: Callable[[], ServingParts],
                 batches: Batches, keys: KeyRing, tracer: Tracer,
                 exchange_of: ExchangeMaker, request_id: Callable[[], str],
                 metrics: BatchSeries) -> None:
        self.store = store
        self.serving = serving
        self.batches = batches
        self.keys = keys
        self.tracer = tracer
        self.exchange_of = exchange_of
        self.request_id = request_id
        self.metrics = metrics
        self.owner = replica_id()
        self.sql = LineSQL.of(store.dialect)
        self._lines: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._owners: dict[str, BatchOwner] = {}
        #: Batches whose counts changed here since they were last written.
        self._dirty: set[str] = set()
        self._line_ended = asyncio.Event()
        self._backoff = Backoff()
        self._renewed = 0.0
        self._housekept = 0.0

    @property
    def running(self) -> int:
        """Lines running on this replica now."""
        return len(self._lines)

    async def start(self) -> None:
        """Start claiming and running lines."""
        self._launch()

    async def stop(self) -> None:
        """Stop claiming; cancel the lines running here and give them back (pending again, for
        any replica), so a restart loses nothing and waits for no lease."""
        await super().stop()
        tasks = list(self._lines.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.store.execute(self.sql.release, (self.owner,))
            await self._recount()
        except StoreUnavailable as error:
            log.warning("batch lines held here are left to their leases: %s", error)

    async def _run(self) -> None:
        while True:
            settings = self.serving().config.batch
            try:
                await self._step(settings)
            except StoreUnavailable as error:
                log.warning("the batch runner cannot reach the store: %s", error)
                await asyncio.sleep(self._backoff.delay(settings.poll_interval_s,
                                                        settings.max_backoff_s))
            except Exception:
                log.exception("the batch runner failed a step")
                await asyncio.sleep(settings.max_backoff_s)

    async def _step(self, settings: BatchConfig) -> None:
        """One turn: keep leases and batches up to date, then claim what the load allows and
        start it; wait when nothing was claimed."""
        now = time.monotonic()
        if now - self._renewed >= settings.lease_s / 3:
            await self._renew(settings.lease_s)
            self._renewed = now
        if now - self._housekept >= settings.poll_interval_s:
            await self._housekeep()
            self._housekept = now
        pause = min(settings.poll_interval_s, settings.lease_s / 3)  # renewals stay on time
        if not settings.enabled:
            await self._wait(pause)
            return
        serving = self.serving()
        gate = serving.gate.snapshot() if serving.gate is not None else None
        spare = spare_capacity(gate, serving.router.deployments(), settings, self.running)
        self._observe_share(serving)
        if spare.contended:
            self.metrics.yields.inc()
            await asyncio.sleep(self._backoff.delay(
                pause, min(settings.max_backoff_s, settings.lease_s / 3)))
            return
        self._backoff.reset()
        if spare.places <= 0:
            await self._wait(pause)
            return
        lines = await self.claim(min(spare.places, settings.claim_size), settings.lease_s)
        for line in lines:
            key = (line.batch_id, line.line_no)
            self._lines[key] = asyncio.get_running_loop().create_task(
                self._line(line), name=f"batch-line-{line.batch_id}-{line.line_no}")
        self.metrics.in_flight.set(self.running)
        if not lines:
            await self._wait(pause)

    async def _wait(self, seconds: float) -> None:
        """Wait until a line ends here, or ``seconds``."""
        self._line_ended.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._line_ended.wait()

    async def claim(self, count: int, lease_s: float) -> list[ClaimedLine]:
        """Take the leases of up to ``count`` lines of running batches: pending ones due now,
        and running ones whose lease has passed (their replica is gone)."""
        now = time.time()
        rows = await self.store.rows(self.sql.claim, (self.owner, now + lease_s, now, now, count))
        return [ClaimedLine(str(batch_id), int(line_no), str(custom_id), str(body),
                            int(attempts))
                for batch_id, line_no, custom_id, body, attempts in rows]

    async def _line(self, line: ClaimedLine) -> None:
        """Run one line and write its result while the lease is still ours."""
        try:
            owner = await self._owner(line.batch_id)
            result = await self.execute(line, owner)
            await self.write(line, result)
        except StoreUnavailable as error:
            log.warning("batch %s line %d: not written (its lease will pass): %s",
                        line.batch_id, line.line_no, error)
        except Exception:
            log.exception("batch %s line %d failed in the runner", line.batch_id, line.line_no)
        finally:
            self._lines.pop((line.batch_id, line.line_no), None)
            self.metrics.in_flight.set(self.running)
            self._line_ended.set()

    async def _owner(self, batch_id: str) -> BatchOwner:
        found = self._owners.get(batch_id)
        if found is None:
            if len(self._owners) >= MAX_OWNERS_KEPT:  # finalized elsewhere, never dropped here
                self._owners.clear()
            rows = await self.store.rows(self.sql.owners, (batch_id,))
            (_, tenant, key_id, endpoint), = rows
            found = self._owners[batch_id] = BatchOwner(
                str(tenant), None if key_id in (None, OPEN_MODE_KEY) else str(key_id),
                str(endpoint))
        return found

    async def execute(self, line: ClaimedLine, owner: BatchOwner) -> LineResult:
        """Run ``line`` through the serving pipeline as a request of ``owner``'s key, at the
        batch tier (never streamed), and say how it ended."""
        serving = self.serving()
        request_id = self.request_id()
        operation = OPERATIONS.get(owner.endpoint, Operation.CHAT)
        try:
            body = json.loads(line.body)
            if isinstance(body, dict):
                body = {name: value for name, value in body.items()
                        if name not in ("stream", "stream_options")}
            exchange = self.exchange_of(operation, body, request_id)
        except SwitchgearError as error:
            refused = Exchange(request_id=request_id, operation=operation, body={}, model="",
                               api=BATCH_API, config_version=serving.version)
            refused.principal.tenant = owner.tenant
            refused.principal.key_id = owner.key_id
            return self._refused(serving, refused, error)
        except ValueError:
            return self._refused(serving, Exchange(
                request_id=request_id, operation=operation, body={}, model="", api=BATCH_API),
                internal_error())
        exchange.api = BATCH_API
        exchange.requested_priority = BATCH_TIER
        exchange.config_version = serving.version
        try:
            identify(exchange, await self._key(owner))
        except SwitchgearError as error:
            return self._refused(serving, exchange, error)
        self.tracer.begin(exchange, None)
        serving.enter()
        try:
            reply = await serving.pipeline(exchange)
        except SwitchgearError as error:  # the Record stage recorded it
            return LineResult.of_error(error, request_id)
        finally:
            serving.leave()
        if not isinstance(reply, dict):  # pragma: no cover - stream was taken out of the body
            await close_stream(reply)
            return LineResult.of_error(internal_error(), request_id)
        return LineResult("done", 200, reply, request_id)

    def _refused(self, serving: ServingParts, exchange: Exchange,
                 error: SwitchgearError) -> LineResult:
        """A line refused before the pipeline: recorded like any refused request."""
        self.tracer.begin(exchange, None)
        serving.recorder.fail(exchange, error)
        return LineResult.of_error(error, exchange.request_id)

    async def _key(self, owner: BatchOwner) -> ApiKey | None:
        """The batch's key as it stands now; AuthenticationFailed once revoked or expired."""
        if owner.key_id is None:
            return None
        key = self._known_key(owner.key_id)
        if key is None and await self.keys.refresh():  # made on another replica just now
            key = self._known_key(owner.key_id)
        if key is None or not key.active(time.time()):
            raise AuthenticationFailed("The batch's API key was revoked or has expired.")
        return key

    def _known_key(self, key_id: str) -> ApiKey | None:
        bootstrap = self.keys.bootstrap
        if bootstrap is not None and bootstrap.key_id == key_id:
            return bootstrap
        return self.keys.find(key_id)

    async def write(self, line: ClaimedLine, result: LineResult) -> bool:
        """Store ``result`` if this replica still holds the line (a line another replica took
        over after our lease passed keeps that replica's result); whether it did."""
        now = time.time()
        if result.state == "retry":
            delay = max(result.retry_after, self._backoff_for(line.attempts))
            written = await self.store.execute(
                self.sql.requeue, (now + delay, line.batch_id, line.line_no, self.owner))
        else:
            written = await self.store.execute(self.sql.finish, (
                result.state, result.status_code, json.dumps(result.response),
                result.request_id, now, line.batch_id, line.line_no, self.owner))
            self._dirty.add(line.batch_id)
        self.metrics.lines.labels(result.state if written else "lost_lease").inc()
        return bool(written)

    def _backoff_for(self, attempts: int) -> float:
        """Seconds before a refused line is tried again: doubling per attempt, capped."""
        settings = self.serving().config.batch
        return min(settings.max_backoff_s, settings.poll_interval_s * 2.0 ** min(attempts, 30))

    async def _renew(self, lease_s: float) -> None:
        """Push the leases of the lines running here forward."""
        if self._lines:
            await self.store.execute(self.sql.renew, (time.time() + lease_s, self.owner))

    async def _housekeep(self) -> None:
        """Write the changed counts, cancel what cancelled batches left, finalize the batches
        whose lines are all over, expire those past their window, and publish the statuses."""
        await self._recount()
        now = time.time()
        cancelled = await self.store.execute(self.sql.cancel, (now, now))
        if cancelled:
            self.metrics.lines.labels("cancelled").inc(cancelled)
        for (batch_id,) in await self.store.rows(self.sql.finishable):
            await self._recount(batch_id)
            await self.batches.finalize(str(batch_id))
            self._owners.pop(str(batch_id), None)
        await self.batches.expire()
        counts = {str(status): int(count)
                  for status, count in await self.store.rows(self.sql.statuses)}
        self.metrics.observe_batches(counts)

    async def _recount(self, *batch_ids: str) -> None:
        """Write the done and failed counts of ``batch_ids`` and of the batches changed here."""
        self._dirty.update(batch_ids)
        for batch_id in list(self._dirty):
            await self.store.execute(self.sql.recount, (batch_id, batch_id, batch_id))
            self._dirty.discard(batch_id)

    def _observe_share(self, serving: ServingParts) -> None:
        """Publish the share of the deployments' places this runner's lines hold."""
        places = sum(d.config.max_concurrency for d in serving.router.deployments())
        self.metrics.share.set(self.running / places if places else 0.0)

