"""The Batch API's files (``/v1/files``): JSONL inputs a tenant uploads (purpose ``batch``) and
the output and error files its batches write (``batch_output``), kept in the record store.

A file belongs to one tenant: another tenant's id is not there. Its content is UTF-8 text
(a JSONL file is), held whole in ``batch_files.content``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from switchgear.errors import InvalidRequest
from switchgear.store.base import RecordStore
from switchgear.store.migrations import BATCH_FILES, numbered, placeholders

FILES_TABLE = "batch_files"
#: Purposes a file here may have: a batch's input, or what a batch wrote.
INPUT_PURPOSE = "batch"
OUTPUT_PURPOSE = "batch_output"
PURPOSES = (INPUT_PURPOSE, OUTPUT_PURPOSE)
#: Files a list returns at most, and by default (OpenAI's).
MAX_FILES_PAGE = 10_000

Order = Literal["asc", "desc"]


def new_id(prefix: str) -> str:
    """A fresh object id: ``prefix`` and 24 random hexadecimal digits."""
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a list: the objects (OpenAI's shape) and whether more follow."""

    data: list[dict[str, Any]]
    has_more: bool

    def public(self) -> dict[str, Any]:
        """The page as OpenAI lists objects (the SDK pages on with the last ``id``)."""
        return {"object": "list", "data": self.data,
                "first_id": self.data[0]["id"] if self.data else None,
                "last_id": self.data[-1]["id"] if self.data else None,
                "has_more": self.has_more}


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file's description (its content is read apart)."""

    file_id: str
    tenant: str
    purpose: str
    filename: str
    size: int
    created_at: float

    def public(self) -> dict[str, Any]:
        """The file as OpenAI's File object."""
        return {"id": self.file_id, "object": "file", "bytes": self.size,
                "created_at": int(self.created_at), "filename": self.filename,
                "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


def _check_text(content: str) -> None:
    """A PostgreSQL TEXT value cannot hold NUL: refuse it the same on every store."""
    if "\x00" in content:
        raise InvalidRequest("The file holds a NUL character; a batch file is JSONL text.",
                             param="file")


class BatchFiles:
    """Stores, lists, reads and deletes one tenant's files at a time."""

    def __init__(self, store: RecordStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        dialect = store.dialect
        described = "file_id, tenant, purpose, filename, bytes, created_at"
        self._insert = (f"INSERT INTO {FILES_TABLE} "
                        f"({', '.join(column.name for column in BATCH_FILES)}) "
                        f"VALUES ({placeholders(dialect, len(BATCH_FILES))})")
        self._select = numbered(dialect, f"SELECT {described} FROM {FILES_TABLE} "
                                         "WHERE file_id = ? AND tenant = ?")
        self._content = numbered(dialect, f"SELECT content FROM {FILES_TABLE} "
                                          "WHERE file_id = ? AND tenant = ?")
        self._delete = numbered(dialect, f"DELETE FROM {FILES_TABLE} "
                                         "WHERE file_id = ? AND tenant = ?")
        self._described = described

    async def create(self, tenant: str, purpose: str, filename: str, content: str) -> StoredFile:
        """Store ``content`` as ``tenant``'s new file."""
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}.",
                                 param="purpose")
        _check_text(content)
        _check_text(filename)
        stored = StoredFile(new_id("file-"), tenant, purpose, filename,
                            len(content.encode()), self.clock())
        await self.store.execute(self._insert, (
            stored.file_id, tenant, purpose, filename, stored.size, stored.created_at, content))
        return stored

    async def get(self, tenant: str, file_id: str) -> StoredFile | None:
        """``tenant``'s file ``file_id``, if there is one."""
        rows = await self.store.rows(self._select, (file_id, tenant))
        return _file(rows[0]) if rows else None

    async def content(self, tenant: str, file_id: str) -> str | None:
        """The content of ``tenant``'s file ``file_id``, if there is one."""
        rows = await self.store.rows(self._content, (file_id, tenant))
        return str(rows[0][0]) if rows else None

    async def delete(self, tenant: str, file_id: str) -> bool:
        """Remove ``tenant``'s file ``file_id``; whether there was one."""
        return await self.store.execute(self._delete, (file_id, tenant)) > 0

    async def listing(self, tenant: str, *, purpose: str | None = None, after: str | None = None,
                   limit: int = MAX_FILES_PAGE, order: Order = "desc") -> Page:
        """A page of ``tenant``'s files (of ``purpose``), newest first unless ``order`` is
        ``asc``, those after the file ``after`` in that order."""
        if not 1 <= limit <= MAX_FILES_PAGE:
            raise InvalidRequest(f"limit must be from 1 to {MAX_FILES_PAGE}.", param="limit")
        where = ["tenant = ?"]
        params: list[object] = [tenant]
        if purpose is not None:
            where.append("purpose = ?")
            params.append(purpose)
        rows = await page_rows(self.store, FILES_TABLE, "file_id", self._described, where,
                               params, after, limit, order)
        return Page([_file(row).public() for row in rows[:limit]], len(rows) > limit)


async def page_rows(store: RecordStore, table: str, id_column: str, columns: str,
                    where: Sequence[str], params: Sequence[object], after: str | None,
                    limit: int, order: Order) -> list[tuple[Any, ...]]:
    """Up to ``limit + 1`` rows of ``table`` matching ``where``, ordered by creation time and
    id, those after the row ``after`` (one of them; a 400 when it is not); the extra row says
    that more follow."""
    clauses, values = list(where), list(params)
    direction, beyond = ("DESC", "<") if order == "desc" else ("ASC", ">")
    if after is not None:
        found = await store.rows(numbered(store.dialect, (
            f"SELECT created_at FROM {table} WHERE {id_column} = ? AND {' AND '.join(where)}")),
            (after, *params))
        if not found:
            raise InvalidRequest(f"No object with id '{after}' to list after.", param="after")
        clauses.append(f"(created_at {beyond} ? OR (created_at = ? AND {id_column} {beyond} ?))")
        values += [found[0][0], found[0][0], after]
    sql = (f"SELECT {columns} FROM {table} WHERE {' AND '.join(clauses)} "
           f"ORDER BY created_at {direction}, {id_column} {direction} LIMIT ?")
    return await store.rows(numbered(store.dialect, sql), (*values, limit + 1))


def _file(row: tuple[Any, ...]) -> StoredFile:
    file_id, tenant, purpose, filename, size, created_at = row
    return StoredFile(str(file_id), str(tenant), str(purpose), str(filename), int(size),
                      float(created_at))
