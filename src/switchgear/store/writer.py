"""The batched background writer that takes request records off the hot path."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from switchgear.store.base import RecordRejected, RecordStore
from switchgear.store.records import RequestRecord, storable, stripped
from switchgear.store.text import safe_line

log = logging.getLogger(__name__)

#: Failures of one batch, while the store answers a ping, after which the writer stops
#: blaming the store and writes the batch row by row to find the row it refuses.
SUSPECT_AFTER = 5
#: Failures of one row alone, while the store answers a ping, before it is set aside.
ROW_TRIES = 3
#: Errors that say the records, not the store, are at fault.
CONTENT_ERRORS = (RecordRejected, ValueError, TypeError)


class RecordWriter:
    """Writes submitted records to a store in batches, in the background, in submit order.

    The writer holds at most ``queue_size`` records (queued or in the batch being written), so a
    store that is down or slow costs bounded memory. ``submit`` never waits: while the writer
    holds ``queue_size`` records, a record submitted is dropped and counted in ``dropped``; the
    first drop of a spell logs one ERROR and the end of the spell (the writer back to half its
    queue) one WARNING with the spell's count. A failed write is retried, with the same records,
    after a growing (capped) pause.

    Every record is made ``storable`` first (off the hot path, once per batch). A batch the
    store refuses for what it holds (or keeps refusing while it answers a ping) is written row
    by row: a refused row is written again ``stripped``, and set aside (counted in
    ``rejected``, logged by request id only) when even that fails, so one bad row never
    holds up the others.
    """

    def __init__(
        self,
        store: RecordStore,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        queue_size: int = 100_000,
        *,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
    ) -> None:
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        #: Records the writer holds at most (queued and being written).
        self.queue_size = queue_size
        self._queue: deque[RequestRecord] = deque()
        #: ``dropped`` when the current spell of drops began; None while nothing is dropped.
        self._spell_from: int | None = None
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._wake_at = 1
        self._drainers = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.submitted = 0
        #: Records the store has accepted.
        self.written = 0
        #: Failed write attempts (each one retried).
        self.failures = 0
        #: Records submitted while the writer held ``queue_size``: dropped, never written.
        self.dropped = 0
        #: Records the store refused even stripped: set aside, never written.
        self.rejected = 0
        #: Records written only in their stripped form.
        self.stripped = 0

    @property
    def pending(self) -> int:
        """Records the writer holds: submitted and neither written, set aside nor dropped."""
        return self.submitted - self.settled

    @property
    def settled(self) -> int:
        """Records written, set aside or dropped."""
        return self.written + self.rejected + self.dropped

    def start(self) -> None:
        """Start writing in the background (call from the running event loop)."""
        if self._task is not None:
            raise RuntimeError("the record writer is already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="switchgear-record-writer"
        )

    def submit(self, record: RequestRecord) -> None:
        """Hand a record over for writing, or drop it while the writer is full; returns at once."""
        if self._closing:
            raise RuntimeError(f"record writer is closed; record {record.request_id} not taken")
        if self.pending >= self.queue_size:
            self._drop()
        else:
            self._queue.append(record)
            if len(self._queue) >= self._wake_at:
                self._wakeup.set()
        self.submitted += 1

    def _drop(self) -> None:
        if self._spell_from is None:
            self._spell_from = self.dropped
            log.error("request log full: the writer holds %d records (store.queue_size) and the "
                      "store is not taking them; dropping new records until it catches up "
                      "(counted in switchgear_request_log_dropped_total)", self.queue_size)
        self.dropped += 1

    def _end_spell(self) -> None:
        """Close a spell of drops once the writer is back to half its queue."""
        if self._spell_from is not None and self.pending <= self.queue_size // 2:
            log.warning("request log caught up: %d records dropped while it was full (%d in all)",
                        self.dropped - self._spell_from, self.dropped)
            self._spell_from = None

    async def drain(self) -> None:
        """Return once every record submitted before the call is written, set aside or dropped."""
        target = self.submitted
        if self.settled >= target:
            return
        self._drainers += 1
        self._wakeup.set()
        try:
            while self.settled < target:
                if self._task is None or self._task.done():
                    raise RuntimeError(f"record writer is not running; {self.pending} records "
                                       "are not written")
                self._progress.clear()
                await self._progress.wait()
        finally:
            self._drainers -= 1

    async def close(self) -> None:
        """Write everything submitted, then stop; later submits raise RuntimeError."""
        self._closing = True
        try:
            await self.drain()
        finally:
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while True:
                batch = [storable(record) for record in await self._collect()]
                await self._write(batch)
                self._progress.set()
                self._end_spell()
        finally:
            self._progress.set()  # wakes drain() so that it sees the writer stopped

    async def _collect(self) -> list[RequestRecord]:
        """Up to batch_size records: as many as are ready, waiting at most flush_interval."""
        loop = asyncio.get_running_loop()
        batch: list[RequestRecord] = []
        deadline: float | None = None
        while True:
            self._take_ready(batch)
            if len(batch) >= self.batch_size or (batch and self._drainers):
                return batch
            self._wakeup.clear()
            if not batch:
                self._wake_at = 1
                await self._wakeup.wait()
                continue
            if deadline is None:
                deadline = loop.time() + self.flush_interval
            self._wake_at = self.batch_size - len(batch)
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup.wait()
            except TimeoutError:
                self._take_ready(batch)
                return batch

    def _take_ready(self, batch: list[RequestRecord]) -> None:
        while len(batch) < self.batch_size and self._queue:
            batch.append(self._queue.popleft())

    async def _write(self, batch: list[RequestRecord]) -> None:
        """Write ``batch``, retrying while the store is down, row by row once it is the batch
        that fails; returns when every record is written or set aside."""
        delay = self.retry_delay
        tries = 0
        while batch:
            try:
                await self.store.write(batch, backlog=len(self._queue))
                self.written += len(batch)
                return
            except Exception as error:  # any failure: keep the batch and try again
                self.failures += 1
                tries += 1
                if isinstance(error, CONTENT_ERRORS) or (
                        tries >= SUSPECT_AFTER and await self._store_answers()):
                    batch = await self._write_rows(batch)
                    if not batch:
                        return
                else:
                    log.warning("could not write %d request records (failure %d); retrying in "
                                "%.2fs: %s", len(batch), self.failures, delay,
                                safe_line(str(error), 500))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def _write_rows(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """Write ``batch`` one row at a time, setting aside each row the store refuses while it
        answers; the rows left when the store stops answering (to retry as a batch)."""
        for index, record in enumerate(batch):
            tries = 0
            form = record
            while True:
                try:
                    await self.store.write([form], backlog=len(self._queue))
                    self.written += 1
                    self.stripped += form is not record
                    self._progress.set()
                    break
                except Exception as error:  # this row, or the store?
                    self.failures += 1
                    tries += 1
                    content = isinstance(error, CONTENT_ERRORS)
                    if not content and not await self._store_answers():
                        return batch[index:]
                    if form is record and (content or tries >= ROW_TRIES):
                        form = stripped(record)
                        tries = 0
                    elif content or tries >= ROW_TRIES:
                        self._set_aside(record, error)
                        break
                await asyncio.sleep(self.retry_delay)
        return []

    def _set_aside(self, record: RequestRecord, error: Exception) -> None:
        self.rejected += 1
        self._progress.set()
        # The request id and the error's type only: the error's text may quote the row.
        log.error("request record %s set aside: the store refused it even stripped (%s; %d "
                  "set aside so far)", safe_line(record.request_id, 64), type(error).__name__,
                  self.rejected)

    async def _store_answers(self) -> bool:
        try:
            await self.store.ping()
        except Exception:  # down, or not answering: either way not the batch's fault
            return False
        return True
