"""Batches (``/v1/batches``) over the record store: create and validate, read, list, cancel,
expire, and the finalize step that writes a finished batch's output and error files.

A batch's life, as OpenAI's: ``validating`` (its input file is checked and its lines written,
each ``pending``) → ``in_progress`` (the runner sends the lines) → ``finalizing`` (the output
and error files are written) → ``completed``; or ``failed`` (the input file was refused, with
``errors``), ``cancelling`` → ``cancelled``, or ``expired`` (past ``expires_at``), the last two
with the output of the lines that finished. Every change of state is one conditional UPDATE, so
replicas may race for it and one wins.

Lines (``batch_lines``): ``pending`` → ``running`` (leased by a runner) → ``done`` | ``failed``;
``cancelled`` when the batch is cancelled or expires before they ran. A line's ``error`` is
JSON ``{"code", "message"}`` (or plain text) when it failed without an HTTP answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchgear.batch.files import (
    INPUT_PURPOSE,
    OUTPUT_PURPOSE,
    BatchFiles,
    Page,
    new_id,
    page_rows,
)
from switchgear.errors import InvalidRequest, NotFound
from switchgear.store.base import RecordStore
from switchgear.store.migrations import BATCHES, numbered, statement_slices, values_rows

BATCHES_TABLE = "batches"
LINES_TABLE = "batch_lines"
#: The endpoints a batch's lines may call.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
#: Completion windows a batch may ask for, in seconds (OpenAI's only one).
COMPLETION_WINDOWS: Mapping[str, float] = {"24h": 86_400.0}
#: Lines a batch may hold at most (OpenAI's limit).
MAX_LINES = 50_000
#: The key id a batch made in open mode (no keys) runs as.
OPEN_MODE_KEY = ""
#: Batches a list returns at most, and by default.
MAX_BATCHES_PAGE = 100
DEFAULT_BATCHES_PAGE = 20
#: Validation errors reported at most (a file of 50,000 bad lines reports the first ones).
MAX_REPORTED_ERRORS = 100
#: Lines written by one INSERT (six bind parameters each, far below both databases' limits).
LINES_PER_INSERT = 512
#: Metadata: pairs at most, and the longest key and value (OpenAI's limits).
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
#: Seconds after which a batch left ``finalizing`` (its replica died writing the files) may
#: be finalized again by another.
FINALIZE_STALE_S = 300.0

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
#: The parameters of POST /v1/batches (``output_expires_after`` is accepted and not applied:
#: files here are kept until deleted).
CREATE_FIELDS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata",
                           "output_expires_after"})
TIMES = ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
         "expired_at", "cancelling_at", "cancelled_at", "expires_at")
COLUMNS = tuple(column.name for column in BATCHES)


class BatchConflict(InvalidRequest):
    """The batch is not in a state that allows what was asked (cancel a finished batch)."""

    status = 409


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One ``batches`` row."""

    batch_id: str
    tenant: str
    key_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: float
    in_progress_at: float | None
    finalizing_at: float | None
    completed_at: float | None
    failed_at: float | None
    expired_at: float | None
    cancelling_at: float | None
    cancelled_at: float | None
    expires_at: float | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    metadata: str | None
    errors: str | None

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> BatchRecord:
        """The record of a row selected with ``COLUMNS``."""
        return cls(*row)

    def public(self) -> dict[str, Any]:
        """The batch as OpenAI's Batch object."""
        times = {name: None if getattr(self, name) is None else int(getattr(self, name))
                 for name in TIMES}
        return {"id": self.batch_id, "object": "batch", "endpoint": self.endpoint,
                "errors": None if self.errors is None else orjson.loads(self.errors),
                "input_file_id": self.input_file_id,
                "completion_window": self.completion_window, "status": self.status,
                "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                **times,
                "request_counts": {"total": self.total, "completed": self.completed,
                                   "failed": self.failed},
                "metadata": None if self.metadata is None else orjson.loads(self.metadata),
                "model": None, "usage": None}


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A checked POST /v1/batches body."""

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None


@dataclass(slots=True)
class Validated:
    """An input file read as a batch's lines: (line number, custom_id, body JSON) each, or
    the errors that refuse it, as OpenAI's BatchError objects."""

    lines: list[tuple[int, str, str]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def refuse(self, code: str, message: str, line: int | None = None,
               param: str | None = None) -> None:
        """Note one error (past ``MAX_REPORTED_ERRORS``, not kept)."""
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message, "param": param})


def create_request(body: Any) -> CreateRequest:
    """``body`` checked as POST /v1/batches asks; a 400 naming the first wrong parameter."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0])
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise InvalidRequest("input_file_id must be a file id.", param="input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}.",
                             param="endpoint")
    window = body.get("completion_window")
    if window not in COMPLETION_WINDOWS:
        raise InvalidRequest(f"completion_window must be one of "
                             f"{', '.join(COMPLETION_WINDOWS)}.", param="completion_window")
    return CreateRequest(input_file_id, str(endpoint), str(window),
                         _metadata(body.get("metadata")))


def _metadata(metadata: Any) -> dict[str, str] | None:
    """Metadata as OpenAI allows it: up to 16 string pairs, keys to 64 and values to 512
    characters."""
    if metadata is None:
        return None
    if (not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS
            or not all(isinstance(key, str) and len(key) <= MAX_METADATA_KEY
                       and isinstance(value, str) and len(value) <= MAX_METADATA_VALUE
                       for key, value in metadata.items())):
        raise InvalidRequest(f"metadata must be an object of at most {MAX_METADATA_PAIRS} "
                             f"string pairs, keys up to {MAX_METADATA_KEY} and values up to "
                             f"{MAX_METADATA_VALUE} characters.", param="metadata")
    return dict(metadata)


def validate_lines(content: str, endpoint: str, max_lines: int = MAX_LINES) -> Validated:
    """Read ``content`` as a batch's JSONL input for ``endpoint``: each non-blank line
    ``{custom_id, method: POST, url: endpoint, body}``, custom_ids unique, at most
    ``max_lines`` lines (CPU work: run it off the event loop)."""
    found = Validated()
    texts = [(number, text) for number, text in enumerate(content.split("\n"), 1)
             if text.strip()]
    if not texts:
        found.refuse("empty_file", "The batch input file is empty.")
        return found
    if len(texts) > max_lines:
        found.refuse("too_many_tasks", f"The batch input file has {len(texts)} requests; a "
                                       f"batch may hold at most {max_lines}.")
        return found
    seen: set[str] = set()
    for number, text in texts:
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            found.refuse("invalid_json_line", "This line is not parseable as valid JSON.",
                         number)
            continue
        problem = _line_problem(line, endpoint)
        if problem is not None:
            code, message, param = problem
            found.refuse(code, message, number, param)
            continue
        custom_id = line["custom_id"]
        if custom_id in seen:
            found.refuse("duplicate_custom_id", "The custom_id for this request is a duplicate "
                         "of another request. The custom_id parameter must be unique for each "
                         "request in a batch.", number, "custom_id")
            continue
        seen.add(custom_id)
        found.lines.append((number, custom_id, orjson.dumps(line["body"]).decode()))
    return found


def _line_problem(line: Any, endpoint: str) -> tuple[str, str, str | None] | None:
    """What is wrong with one parsed input line, as (code, message, param); None if nothing."""
    if not isinstance(line, dict):
        return "invalid_request", "This line is not a JSON object.", None
    for name, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
        if name not in line:
            return ("missing_required_parameter",
                    f"This line is missing the required parameter '{name}'.", name)
        if not isinstance(line[name], kind) or (kind is str and not line[name]):
            return "invalid_request", f"'{name}' must be a non-empty {kind.__name__}.", name
    if line["method"] != "POST":
        return "invalid_request", "The method of a batch request must be POST.", "method"
    if line["url"] != endpoint:
        return ("url_mismatch", f"The url of this request ({line['url']}) does not match the "
                                f"batch's endpoint ({endpoint}).", "url")
    return None


class Batches:
    """Batches per tenant over ``store``, their files in ``files``."""

    def __init__(self, store: RecordStore, files: BatchFiles,
                 clock: Callable[[], float] = time.time, max_lines: int = MAX_LINES) -> None:
        self.store = store
        self.files = files
        self.clock = clock
        self.max_lines = max_lines
        select = f"SELECT {', '.join(COLUMNS)} FROM {BATCHES_TABLE} WHERE batch_id = ?"
        self._select_any = self._sql(select)
        self._select = self._sql(f"{select} AND tenant = ?")

    def _sql(self, text: str) -> str:
        """``text`` with its ``?`` marks in the store's dialect."""
        return numbered(self.store.dialect, text)

    async def create(self, tenant: str, key_id: str | None, body: Any) -> BatchRecord:
        """A new batch of ``tenant``, run as ``key_id``, from the POST /v1/batches ``body``:
        its input file validated and its lines written (``in_progress``), or ``failed`` with
        the errors found; 400 for a wrong parameter, 404 for an unknown input file."""
        request = create_request(body)
        stored = await self.files.get(tenant, request.input_file_id)
        if stored is None:
            raise NotFound(f"No such File object: {request.input_file_id}",
                           param="input_file_id")
        if stored.purpose != INPUT_PURPOSE:
            raise InvalidRequest(f"The input file must have purpose '{INPUT_PURPOSE}'.",
                                 param="input_file_id")
        now = self.clock()
        batch_id = new_id("batch_")
        row: dict[str, object] = {name: None for name in COLUMNS} | {
            "batch_id": batch_id, "tenant": tenant, "key_id": key_id or OPEN_MODE_KEY,
            "endpoint": request.endpoint, "input_file_id": request.input_file_id,
            "completion_window": request.completion_window, "status": "validating",
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOWS[request.completion_window],
            "total": 0, "completed": 0, "failed": 0,
            "metadata": None if request.metadata is None else orjson.dumps(
                request.metadata).decode()}
        await self.store.execute(
            f"INSERT INTO {BATCHES_TABLE} ({', '.join(COLUMNS)}) "
            f"VALUES {values_rows(self.store.dialect, len(COLUMNS), 1)}",
            [row[name] for name in COLUMNS])
        await self._validate(batch_id, request.endpoint, request.input_file_id, tenant)
        return await self._require(tenant, batch_id)

    async def _validate(self, batch_id: str, endpoint: str, file_id: str, tenant: str) -> None:
        """Check the input file and write its lines; the batch then runs, or fails."""
        content = await self.files.content(tenant, file_id)
        validated = await asyncio.to_thread(validate_lines, content or "", endpoint,
                                            self.max_lines)
        if validated.errors:
            errors = {"object": "list", "data": validated.errors}
            await self.store.execute(self._sql(
                f"UPDATE {BATCHES_TABLE} SET status = 'failed', failed_at = ?, errors = ? "
                "WHERE batch_id = ? AND status = 'validating'"),
                (self.clock(), orjson.dumps(errors).decode(), batch_id))
            return
        await self.store.execute_all([(  # every line, or none
            f"INSERT INTO {LINES_TABLE} (batch_id, line_no, custom_id, body, state, "
            f"attempts) VALUES {values_rows(self.store.dialect, 6, len(chunk))} "
            "ON CONFLICT DO NOTHING",
            [value for number, custom_id, body in chunk
             for value in (batch_id, number, custom_id, body, "pending", 0)])
            for chunk in statement_slices(validated.lines, LINES_PER_INSERT)])
        started = await self.store.execute(self._sql(
            f"UPDATE {BATCHES_TABLE} SET status = 'in_progress', in_progress_at = ?, total = ? "
            "WHERE batch_id = ? AND status = 'validating'"),
            (self.clock(), len(validated.lines), batch_id))
        if not started:  # cancelled while validating: its lines never run
            await self.store.execute(self._sql(
                f"UPDATE {BATCHES_TABLE} SET total = ? WHERE batch_id = ?"),
                (len(validated.lines), batch_id))
            await self._cancel_pending(batch_id)
            await self.finalize(batch_id)

    async def get(self, tenant: str, batch_id: str) -> BatchRecord | None:
        """``tenant``'s batch ``batch_id``, if there is one."""
        rows = await self.store.rows(self._select, (batch_id, tenant))
        return BatchRecord.of_row(rows[0]) if rows else None

    async def _require(self, tenant: str, batch_id: str) -> BatchRecord:
        found = await self.get(tenant, batch_id)
        if found is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        return found

    async def _any(self, batch_id: str) -> BatchRecord | None:
        rows = await self.store.rows(self._select_any, (batch_id,))
        return BatchRecord.of_row(rows[0]) if rows else None

    async def listing(self, tenant: str, *, after: str | None = None,
                   limit: int = DEFAULT_BATCHES_PAGE) -> Page:
        """A page of ``tenant``'s batches, newest first, those after the batch ``after``."""
        if not 1 <= limit <= MAX_BATCHES_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_BATCHES_PAGE}.", param="limit")
        rows = await page_rows(self.store, BATCHES_TABLE, "batch_id", ", ".join(COLUMNS),
                               ["tenant = ?"], [tenant], after, limit, "desc")
        return Page([BatchRecord.of_row(row).public() for row in rows[:limit]],
                    len(rows) > limit)

    async def cancel(self, tenant: str, batch_id: str) -> BatchRecord:
        """Cancel ``tenant``'s batch: its pending lines never run, those running finish, and
        it is ``cancelled`` (at once when none is running) with what finished; a 409 for a
        batch already over, 404 for an unknown one."""
        batch = await self._require(tenant, batch_id)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        moved = await self.store.execute(self._sql(
            f"UPDATE {BATCHES_TABLE} SET status = 'cancelling', cancelling_at = ? "
            "WHERE batch_id = ? AND status IN ('validating', 'in_progress')"),
            (self.clock(), batch_id))
        if not moved:
            now = await self._require(tenant, batch_id)
            if now.status in ("cancelling", "cancelled"):
                return now
            raise BatchConflict(f"Cannot cancel a batch with status '{now.status}'.")
        await self._cancel_pending(batch_id)
        await self.finalize(batch_id)
        return await self._require(tenant, batch_id)

    async def _cancel_pending(self, batch_id: str) -> None:
        await self.store.execute(self._sql(
            f"UPDATE {LINES_TABLE} SET state = 'cancelled', done_at = ? "
            "WHERE batch_id = ? AND state = 'pending'"), (self.clock(), batch_id))

    async def expire(self, batch_id: str | None = None) -> list[str]:
        """Expire the batches (``batch_id`` alone, if given) past ``expires_at`` that are not
        over: their pending lines never run, and each is ``expired`` with what finished once
        none runs; their ids."""
        now = self.clock()
        only = "" if batch_id is None else " AND batch_id = ?"
        rows = await self.store.rows(self._sql(
            f"SELECT batch_id FROM {BATCHES_TABLE} WHERE status IN "
            "('validating', 'in_progress', 'cancelling') "
            f"AND expires_at < ? AND expired_at IS NULL{only}"),
            (now,) if batch_id is None else (now, batch_id))
        expired = []
        for (found,) in rows:
            if await self.store.execute(self._sql(
                    f"UPDATE {BATCHES_TABLE} SET expired_at = ? WHERE batch_id = ? "
                    "AND expired_at IS NULL AND status IN "
                    "('validating', 'in_progress', 'cancelling')"), (now, found)):
                expired.append(str(found))
                await self._cancel_pending(found)
                await self.finalize(found)
        return expired

    async def finalize(self, batch_id: str) -> BatchRecord | None:
        """Finish ``batch_id`` if no line of it is pending or running: write its output file
        (the lines answered) and error file (those that failed, or never ran) and set it
        ``completed``, ``cancelled`` or ``expired``. Any replica may call it; one finalizes.
        The batch as it is afterwards (None for an unknown id)."""
        now = self.clock()
        batch = await self._any(batch_id)
        if batch is None or not _finalizable(batch, now):
            return batch
        if batch.status == "cancelling" or batch.expired_at is not None:
            # no line starts any more (one a runner put back for a retry, too), and one leased
            # by a replica that died would never finish: neither ran
            await self.store.execute(self._sql(
                f"UPDATE {LINES_TABLE} SET state = 'cancelled', done_at = ? "
                "WHERE batch_id = ? AND (state = 'pending' "
                "OR (state = 'running' AND lease_until < ?))"),
                (now, batch_id, now))
        (remaining,), = await self.store.rows(self._sql(
            f"SELECT count(*) FROM {LINES_TABLE} "
            "WHERE batch_id = ? AND state IN ('pending', 'running')"), (batch_id,))
        if remaining:
            return batch
        claimed = await self.store.execute(self._sql(
            f"UPDATE {BATCHES_TABLE} SET status = 'finalizing', finalizing_at = ? "
            "WHERE batch_id = ? AND status = ? AND COALESCE(finalizing_at, -1) = ?"),
            (now, batch_id, batch.status,
             -1 if batch.finalizing_at is None else batch.finalizing_at))
        if claimed:
            await self._write_results(batch, now)
        return await self._any(batch_id)

    async def _write_results(self, batch: BatchRecord, claimed_at: float) -> None:
        """Write the output and error files of ``batch`` (finalizing since ``claimed_at``) and
        end it; when another replica took it over meanwhile, take the files back."""
        rows = await self.store.rows(self._sql(
            f"SELECT line_no, custom_id, state, status_code, response, error, request_id "
            f"FROM {LINES_TABLE} WHERE batch_id = ? ORDER BY line_no"), (batch.batch_id,))
        ending = ("expired" if batch.expired_at is not None
                  else "cancelled" if batch.cancelling_at is not None else "completed")
        results = await asyncio.to_thread(render_results, batch.batch_id, rows, ending)
        files = [None if not text else await self.files.create(
                    batch.tenant, OUTPUT_PURPOSE, f"{batch.batch_id}_{name}.jsonl", text)
                 for name, text in (("output", results.output), ("error", results.errors))]
        output_id, error_id = (None if stored is None else stored.file_id for stored in files)
        when = {"completed": "completed_at", "cancelled": "cancelled_at",
                "expired": "expired_at"}[ending]
        ended = await self.store.execute(self._sql(
            f"UPDATE {BATCHES_TABLE} SET status = ?, {when} = COALESCE({when}, ?), "
            "output_file_id = ?, error_file_id = ?, completed = ?, failed = ? "
            "WHERE batch_id = ? AND status = 'finalizing' AND finalizing_at = ?"),
            (ending, self.clock(), output_id, error_id, results.completed, results.failed,
             batch.batch_id, claimed_at))
        if not ended:
            for stored in files:
                if stored is not None:
                    await self.files.delete(batch.tenant, stored.file_id)


def _finalizable(batch: BatchRecord, now: float) -> bool:
    """Whether ``batch`` is in a state finalize may take it from."""
    if batch.status in ("in_progress", "cancelling"):
        return True
    if batch.status == "validating":
        return batch.expired_at is not None
    if batch.status == "finalizing":  # its finalizer died
        return batch.finalizing_at is None or batch.finalizing_at < now - FINALIZE_STALE_S
    return False


@dataclass(frozen=True, slots=True)
class Results:
    """A finished batch's output and error files (JSONL text, empty when none) and counts."""

    output: str
    errors: str
    completed: int
    failed: int


def render_results(batch_id: str, rows: list[tuple[Any, ...]], ending: str) -> Results:
    """The output file (lines answered, OpenAI's batch output lines) and error file (lines
    that failed or never ran) of a batch from its ``batch_lines`` rows (CPU work: run it off
    the event loop)."""
    output: list[bytes] = []
    errors: list[bytes] = []
    never_ran = ({"code": "batch_expired", "message": "This request could not be executed "
                  "before the completion window expired."} if ending == "expired" else
                 {"code": "batch_cancelled", "message": "This request was not executed: the "
                  "batch was cancelled."})
    completed = failed = 0
    for line_no, custom_id, state, status_code, response, error, request_id in rows:
        answer = None if response is None or status_code is None else {
            "status_code": int(status_code), "request_id": request_id,
            "body": orjson.Fragment(response)}
        line: dict[str, Any] = {"id": f"batch_req_{batch_id.removeprefix('batch_')}_{line_no}",
                                "custom_id": custom_id, "response": answer, "error": None}
        if state == "done":
            completed += 1
            output.append(orjson.dumps(line))
            continue
        if state == "failed":
            failed += 1
            if answer is None:
                line["error"] = line_error(error)
        else:
            line["error"] = never_ran
        errors.append(orjson.dumps(line))
    return Results(_jsonl(output), _jsonl(errors), completed, failed)


def line_error(error: str | None) -> dict[str, Any]:
    """A failed line's ``error`` as OpenAI's ``{code, message}``: from the JSON the runner
    wrote (an OpenAI error body or its inner object), else the text as the message."""
    if error:
        try:
            parsed = orjson.loads(error)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            inner = parsed.get("error", parsed)
            if isinstance(inner, dict) and "message" in inner:
                return {"code": inner.get("code") or inner.get("type"),
                        "message": inner["message"]}
    return {"code": "request_failed", "message": error or "The request failed."}


def _jsonl(lines: list[bytes]) -> str:
    return b"".join(line + b"\n" for line in lines).decode()
