"""The Batch API's endpoints: ``/v1/files`` (upload as multipart/form-data, list, retrieve,
content, delete) and ``/v1/batches`` (create, list, retrieve, cancel), per tenant.

Any key that may call models may use them, for its own tenant (``default`` in open mode): a
file or batch of another tenant is a 404. An upload is read up to ``server.max_file_bytes``
and parsed off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from switchgear.admission.keys import ApiKey
from switchgear.batch.batches import TERMINAL, Batches
from switchgear.batch.files import INPUT_PURPOSE, MAX_FILES_PAGE, BatchFiles
from switchgear.errors import BodyTooLarge, InvalidRequest, NotFound, UnsupportedMediaType
from switchgear.gateway.http import (
    Receive,
    Scope,
    Send,
    bearer_token,
    header,
    read_body,
    read_json,
    send_body,
    send_json,
    whole_number,
)
from switchgear.gateway.state import AppState

FILES_PREFIX = "/v1/files/"
BATCHES_PREFIX = "/v1/batches/"
#: What a multipart body may hold beyond the file itself (the purpose, boundaries, headers).
FORM_OVERHEAD = 64 * 1024
#: Largest POST /v1/batches body.
BATCH_BODY_LIMIT = 64 * 1024
#: A parameter of a part's Content-Disposition: name="value" (quoted, with escapes) or bare.
DISPOSITION_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
#: What an HTML5 form encoder (httpx, browsers) writes for '"' and control characters.
FORM_ESCAPE = re.compile(r"%(22|[01][0-9A-Fa-f])")


@dataclass(frozen=True, slots=True)
class FormPart:
    """One part of a multipart/form-data body: its filename (None for a plain field) and
    content (a view of the body: no copy of a large file)."""

    filename: str | None
    content: memoryview


def _tenant(key: ApiKey | None) -> str:
    """The tenant a caller's files and batches belong to (``default`` in open mode)."""
    return "default" if key is None else key.tenant


def _query(scope: Scope) -> dict[str, str]:
    return {name: values[-1] for name, values in
            parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


def _limit(query: dict[str, str], default: int) -> int:
    text = query.get("limit")
    if text is None:
        return default
    if not whole_number(text):
        raise InvalidRequest("limit must be a whole number.", param="limit")
    return int(text)


def _unquote_form(value: str) -> str:
    """A quoted Content-Disposition value as written: backslash escapes undone, and the
    percent forms HTML5 form encoding gives '"' and control characters decoded."""
    value = re.sub(r"\\(.)", r"\1", value)
    return FORM_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value)


def _disposition(headers: str) -> tuple[str | None, str | None]:
    """The name and filename a part's Content-Disposition header gives."""
    for line in headers.split("\r\n"):
        label, _, value = line.partition(":")
        if label.strip().lower() != "content-disposition":
            continue
        params: dict[str, str] = {}
        for match in DISPOSITION_PARAM.finditer(value):
            quoted, bare = match.group(2), match.group(3)
            params[match.group(1).lower()] = (_unquote_form(quoted) if quoted is not None
                                              else bare or "")
        extended = params.get("filename*")
        filename = params.get("filename")
        if extended is not None and "''" in extended:  # RFC 5987: charset''percent-encoded
            charset, _, encoded = extended.partition("''")
            filename = unquote(encoded, encoding=charset or "utf-8", errors="strict")
        return params.get("name"), filename
    return None, None


def form_parts(body: bytes | bytearray, content_type: bytes) -> dict[str, FormPart]:
    """The fields of a multipart/form-data ``body`` (RFC 7578), by name, each a view of
    ``body`` (CPU work for a big body: run it off the event loop); a 400 for a body that is
    not one."""
    boundary = next((param.split("=", 1)[1].strip().strip('"')
                     for param in content_type.decode("latin-1").split(";")[1:]
                     if param.strip().lower().startswith("boundary=")), "")
    if not boundary:
        raise InvalidRequest("A multipart/form-data body needs a boundary.")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    view = memoryview(body)
    # the first delimiter may open the body without the line break before it
    first = -2 if body.startswith(delimiter[2:]) else body.find(delimiter)
    at = first + len(delimiter)
    fields: dict[str, FormPart] = {}
    while first != -1:
        if body[at:at + 2] == b"--":  # the closing delimiter
            return fields
        opened = body.find(b"\r\n", at)
        following = body.find(delimiter, opened)
        if opened < 0 or following < 0:
            break
        headers_end = body.find(b"\r\n\r\n", opened, following + 2)
        if headers_end < 0:
            raise InvalidRequest("A part of the multipart/form-data body is malformed.")
        try:
            name, filename = _disposition(bytes(view[opened + 2:headers_end]).decode())
        except UnicodeDecodeError:
            raise InvalidRequest("A part's headers are not UTF-8.") from None
        if name is None:
            raise InvalidRequest("A part of the multipart/form-data body has no name.")
        fields[name] = FormPart(filename, view[headers_end + 4:following])
        at = following + len(delimiter)
    raise InvalidRequest("The multipart/form-data body is incomplete.")


def _upload(fields: dict[str, FormPart], limit: int) -> tuple[str, str, str]:
    """(purpose, filename, text) of an upload's fields; a 400 (413) naming what is wrong."""
    purpose_part, file_part = fields.get("purpose"), fields.get("file")
    if purpose_part is None:
        raise InvalidRequest("purpose is required.", param="purpose")
    purpose = str(purpose_part.content, "utf-8", "replace")
    if purpose != INPUT_PURPOSE:
        raise InvalidRequest(f"purpose must be '{INPUT_PURPOSE}' here (the Batch API's "
                             "input).", param="purpose")
    if file_part is None or file_part.filename is None:
        raise InvalidRequest("file is required: a part with a filename.", param="file")
    if len(file_part.content) > limit:
        raise BodyTooLarge(f"The file is larger than the limit of {limit} bytes.",
                           param="file")
    if not file_part.filename.lower().endswith(".jsonl"):
        raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl",
                             param="file")
    try:
        text = str(file_part.content, "utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The file must be UTF-8 text (JSONL).", param="file") from None
    return purpose, file_part.filename, text


class BatchAPI:
    """The /v1/files and /v1/batches endpoints over ``state``'s store."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.files = BatchFiles(state.store)
        self.batches = Batches(state.store, self.files)

    async def _caller(self, scope: Scope) -> ApiKey | None:
        return await self.state.authenticator.caller(bearer_token(scope))

    async def create_file(self, scope: Scope, receive: Receive, send: Send,
                          request_id: str) -> None:
        """POST /v1/files: a multipart/form-data upload of ``file`` with ``purpose``."""
        tenant = _tenant(await self._caller(scope))
        content_type = header(scope, b"content-type") or b""
        if not content_type.lower().startswith(b"multipart/form-data"):
            raise UnsupportedMediaType("Content-Type must be multipart/form-data.")
        limit = self.state.config.server.max_file_bytes
        body = await read_body(scope, receive, limit + FORM_OVERHEAD)
        fields = await asyncio.to_thread(form_parts, body, content_type)
        purpose, filename, text = await asyncio.to_thread(_upload, fields, limit)
        stored = await self.files.create(tenant, purpose, filename, text)
        await send_json(send, 200, stored.public(), request_id)

    async def list_files(self, scope: Scope, receive: Receive, send: Send,
                         request_id: str) -> None:
        """GET /v1/files: the caller's files, newest first (``after``, ``limit``, ``order``,
        ``purpose``)."""
        tenant = _tenant(await self._caller(scope))
        query = _query(scope)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be asc or desc.", param="order")
        page = await self.files.listing(tenant, purpose=query.get("purpose"),
                                     after=query.get("after"),
                                     limit=_limit(query, MAX_FILES_PAGE),
                                     order="asc" if order == "asc" else "desc")
        await send_json(send, 200, page.public(), request_id)

    async def _file_target(self, scope: Scope) -> tuple[str, list[str]]:
        """The caller's tenant and the path's parts after /v1/files/."""
        tenant = _tenant(await self._caller(scope))
        return tenant, scope["path"].rstrip("/")[len(FILES_PREFIX):].split("/")

    async def file(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /v1/files/{id} (the File object) and /v1/files/{id}/content (its bytes)."""
        tenant, parts = await self._file_target(scope)
        if len(parts) == 1 and parts[0]:
            stored = await self.files.get(tenant, parts[0])
            if stored is None:
                raise _no_file(parts[0])
            await send_json(send, 200, stored.public(), request_id)
        elif len(parts) == 2 and parts[0] and parts[1] == "content":
            content = await self.files.content(tenant, parts[0])
            if content is None:
                raise _no_file(parts[0])
            await send_body(send, 200, content.encode(), request_id,
                            content_type=b"application/octet-stream")
        else:
            raise NotFound(f"Unknown path: {scope['path']}")

    async def delete_file(self, scope: Scope, receive: Receive, send: Send,
                          request_id: str) -> None:
        """DELETE /v1/files/{id}."""
        tenant, parts = await self._file_target(scope)
        if len(parts) != 1 or not parts[0]:
            raise NotFound(f"Unknown path: {scope['path']}")
        if not await self.files.delete(tenant, parts[0]):
            raise _no_file(parts[0])
        await send_json(send, 200, {"id": parts[0], "object": "file", "deleted": True},
                        request_id)

    async def create_batch(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """POST /v1/batches: a batch of the lines of an uploaded file."""
        key = await self._caller(scope)
        body = await read_json(scope, receive, BATCH_BODY_LIMIT)
        batch = await self.batches.create(_tenant(key), None if key is None else key.key_id,
                                          body)
        await send_json(send, 200, batch.public(), request_id)

    async def list_batches(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """GET /v1/batches: the caller's batches, newest first (``after``, ``limit``)."""
        tenant = _tenant(await self._caller(scope))
        query = _query(scope)
        page = await self.batches.listing(tenant, after=query.get("after"),
                                       limit=_limit(query, 20))
        await send_json(send, 200, page.public(), request_id)

    async def _batch_target(self, scope: Scope, action: str | None) -> tuple[str, str]:
        """The caller's tenant and the batch id of /v1/batches/{id}[/action]."""
        tenant = _tenant(await self._caller(scope))
        parts = scope["path"].rstrip("/")[len(BATCHES_PREFIX):].split("/")
        if not parts[0] or parts[1:] != ([] if action is None else [action]):
            raise NotFound(f"Unknown path: {scope['path']}")
        return tenant, parts[0]

    async def batch(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /v1/batches/{id}; a batch past its window is expired first."""
        tenant, batch_id = await self._batch_target(scope, None)
        found = await self.batches.get(tenant, batch_id)
        if (found is not None and found.status not in TERMINAL
                and found.expires_at is not None
                and found.expires_at < self.batches.clock()):
            await self.batches.expire(batch_id)
            found = await self.batches.get(tenant, batch_id)
        if found is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id")
        await send_json(send, 200, found.public(), request_id)

    async def cancel_batch(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """POST /v1/batches/{id}/cancel."""
        tenant, batch_id = await self._batch_target(scope, "cancel")
        batch = await self.batches.cancel(tenant, batch_id)
        await send_json(send, 200, batch.public(), request_id)

    def routes(self) -> dict[str, dict[str, Any]]:
        """The exact paths this API serves, with their methods."""
        return {"/v1/files": {"GET": self.list_files, "POST": self.create_file},
                "/v1/batches": {"GET": self.list_batches, "POST": self.create_batch}}

    def prefixed(self) -> list[tuple[str, dict[str, Any]]]:
        """The paths with an id this API serves: (prefix, methods)."""
        return [(FILES_PREFIX, {"GET": self.file, "DELETE": self.delete_file}),
                (BATCHES_PREFIX, {"GET": self.batch, "POST": self.cancel_batch})]


def _no_file(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="id")
