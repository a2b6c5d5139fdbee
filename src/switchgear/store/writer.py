"""The batched background writer that takes request records off the hot path."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from switchgear.store.base import RecordStore
from switchgear.store.records import RequestRecord

log = logging.getLogger(__name__)


class RecordWriter:
    """Writes submitted records to a store in batches, in the background, in submit order.

    ``submit`` never waits: a record goes into a bounded queue or, while that queue is full, into
    an overflow list that refills the queue as it empties, so nothing is dropped and order holds.
    A failed write is retried, with the same records, after a growing (capped) pause.
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
        self._queue: asyncio.Queue[RequestRecord] = asyncio.Queue(queue_size)
        self._overflow: deque[RequestRecord] = deque()
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
        #: Records that found the queue full and waited in the overflow list.
        self.overflowed = 0

    @property
    def pending(self) -> int:
        """Records submitted and not yet written."""
        return self.submitted - self.written

    @property
    def backlog(self) -> int:
        """Records waiting in the overflow list because the queue is full."""
        return len(self._overflow)

    def start(self) -> None:
        """Start writing in the background (call from the running event loop)."""
        if self._task is not None:
            raise RuntimeError("the record writer is already started")
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="switchgear-record-writer"
        )

    def submit(self, record: RequestRecord) -> None:
        """Hand a record over for writing; returns at once."""
        if self._closing:
            raise RuntimeError(f"record writer is closed; record {record.request_id} not taken")
        self.submitted += 1
        if self._overflow or self._queue.full():
            if not self._overflow:
                log.warning("request-log queue full (%d records); holding the excess in memory",
                            self._queue.maxsize)
            self._overflow.append(record)
            self.overflowed += 1
        else:
            self._queue.put_nowait(record)
        if self._queue.qsize() + len(self._overflow) >= self._wake_at:
            self._wakeup.set()

    async def drain(self) -> None:
        """Return once every record submitted before the call is written."""
        target = self.submitted
        if self.written >= target:
            return
        self._drainers += 1
        self._wakeup.set()
        try:
            while self.written < target:
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
                batch = await self._collect()
                await self._write(batch)
                self.written += len(batch)
                self._progress.set()
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
        while len(batch) < self.batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
            if self._overflow:
                self._queue.put_nowait(self._overflow.popleft())

    async def _write(self, batch: list[RequestRecord]) -> None:
        delay = self.retry_delay
        while True:
            try:
                await self.store.write(batch)
                return
            except Exception as error:  # any failure: keep the batch and try again
                self.failures += 1
                log.warning("could not write %d request records (failure %d); retrying in "
                            "%.2fs: %s", len(batch), self.failures, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)
