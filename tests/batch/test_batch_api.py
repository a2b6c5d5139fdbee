"""The Batch API's files and batches: the official openai SDK's ``client.files`` and
``client.batches`` against a real gateway on SQLite and PostgreSQL (upload, list, retrieve,
content, delete; create, list, retrieve, cancel; validation as OpenAI reports it; tenants apart),
and the state machine under them (finalize, cancel, expire) over a real store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any, Final

import openai
import orjson
import pytest
import urllib3
from openai.types import Batch, FileDeleted, FileObject

from switchgear.batch.batches import (
    MAX_LINES,
    BatchConflict,
    Batches,
    render_results,
    validate_lines,
)
from switchgear.batch.files import BatchFiles
from switchgear.config import BatchConfig, Config
from switchgear.errors import InvalidRequest
from switchgear.gateway.batch_api import form_parts
from switchgear.store import open_store
from switchgear.store.base import RecordStore

from servers import gateway

ADMIN = "sg-test-admin-secret-0123456789abcdef"
CHAT: Final = "/v1/chat/completions"
MODELS = {"sim": {"deployments": [{"name": "sim", "backend": "simulated",
                                   "simulated": {"ttft_ms": 0, "tpot_ms": 0}}]}}


def request_line(number: int, **changes: Any) -> dict[str, Any]:
    """One batch input line asking the chat endpoint, as OpenAI's docs write them."""
    return {"custom_id": f"request-{number}", "method": "POST", "url": CHAT,
            "body": {"model": "sim", "messages": [{"role": "user", "content": f"Hi {number}"}],
                     "max_tokens": 4}, **changes}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def client(base_url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)


def raw(base_url: str, method: str, path: str, token: str = "unused", body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    """A request without the SDK: status and the parsed JSON answer."""
    response = urllib3.request(method, base_url.removesuffix("/v1") + path, timeout=30,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": content_type}, body=body)
    return response.status, json.loads(response.data)


def exactly(model: type[Any], answer: dict[str, Any]) -> Any:
    """``answer`` as the SDK's type, with no field the type does not know."""
    assert set(answer) <= set(model.model_fields), set(answer) - set(model.model_fields)
    return model.model_validate(answer)


@pytest.fixture
def base_url(make_config: Callable[..., Config], store_url: str,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gateway over each kind of store that requires keys (the admin key in the env), its
    batch runner off: these tests see each batch as the API leaves it."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    config = make_config(MODELS, store_url, max_file_bytes=2 * 1024 * 1024)
    with gateway(config.model_copy(update={"batch": BatchConfig(enabled=False)})) as url:
        yield url


def new_key(base_url: str, tenant: str, role: str = "client") -> str:
    status, made = raw(base_url, "POST", "/admin/keys", ADMIN,
                       json.dumps({"name": tenant, "tenant": tenant, "role": role}).encode())
    assert status == 201, made
    return str(made["secret"])


def test_a_thousand_line_file_becomes_a_batch_through_the_sdk(base_url: str) -> None:
    key = new_key(base_url, "acme")
    content = jsonl([request_line(number) for number in range(1000)])
    with client(base_url, key) as sdk:
        uploaded = sdk.files.create(file=("requests.jsonl", content), purpose="batch")
        assert uploaded.id.startswith("file-") and uploaded.purpose == "batch"
        assert uploaded.bytes == len(content) and uploaded.filename == "requests.jsonl"
        assert sdk.files.retrieve(uploaded.id) == uploaded
        assert sdk.files.content(uploaded.id).content == content
        assert [listed.id for listed in sdk.files.list()] == [uploaded.id]
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                   completion_window="24h", metadata={"job": "nightly"})
        assert batch.id.startswith("batch_") and batch.status == "in_progress"
        assert batch.request_counts is not None and batch.request_counts.total == 1000
        assert batch.metadata == {"job": "nightly"} and batch.input_file_id == uploaded.id
        assert batch.expires_at is not None and batch.in_progress_at is not None
        assert batch.expires_at - batch.created_at == 86_400
        assert sdk.batches.retrieve(batch.id).id == batch.id
    status, answer = raw(base_url, "GET", f"/v1/batches/{batch.id}", key)
    assert status == 200 and exactly(Batch, answer).id == batch.id
    status, answer = raw(base_url, "GET", f"/v1/files/{uploaded.id}", key)
    assert status == 200 and exactly(FileObject, answer) == uploaded


def test_batches_and_files_list_newest_first_a_page_at_a_time(base_url: str) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        made = []
        for number in range(5):
            uploaded = sdk.files.create(file=(f"part-{number}.jsonl", jsonl([request_line(1)])),
                                        purpose="batch")
            made.append(sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                           completion_window="24h").id)
        first = sdk.batches.list(limit=2)
        assert [b.id for b in first.data] == made[::-1][:2] and first.has_more
        assert [b.id for b in sdk.batches.list(limit=2)] == made[::-1]  # the SDK pages on
        assert [b.id for b in sdk.batches.list(limit=3, after=made[2])] == made[1::-1]
        files = sdk.files.list(order="asc", limit=2)
        assert [f.filename for f in files] == [f"part-{n}.jsonl" for n in range(5)]
        assert sdk.files.list(purpose="batch_output").data == []
    status, answer = raw(base_url, "GET", "/v1/batches?limit=0", "unused")
    assert status == 401  # keys first
    status, answer = raw(base_url, "GET", "/v1/batches?after=batch_nope",
                         new_key(base_url, "acme"))
    assert status == 400 and answer["error"]["param"] == "after"


#: A bad input file and the first error its batch fails with: (code, line, param).
BAD_FILES: list[tuple[str, bytes, tuple[str, int | None, str | None]]] = [
    ("not JSONL", b'{"custom_id": "a", "method": "POST"\nnot json at all\n',
     ("invalid_json_line", 1, None)),
    ("duplicate custom_id", jsonl([request_line(1), request_line(2, custom_id="request-1")]),
     ("duplicate_custom_id", 2, "custom_id")),
    ("wrong url", jsonl([request_line(1), request_line(2, url="/v1/embeddings")]),
     ("url_mismatch", 2, "url")),
    ("wrong method", jsonl([request_line(1, method="GET")]), ("invalid_request", 1, "method")),
    ("no body", jsonl([{k: v for k, v in request_line(1).items() if k != "body"}]),
     ("missing_required_parameter", 1, "body")),
    ("not an object", b"[1, 2]\n", ("invalid_request", 1, None)),
    ("empty", b"\n \n", ("empty_file", None, None)),
]


@pytest.mark.parametrize(("content", "expected"), [case[1:] for case in BAD_FILES],
                         ids=[case[0] for case in BAD_FILES])
def test_a_bad_input_file_fails_its_batch_with_openais_errors(
    base_url: str, content: bytes, expected: tuple[str, int | None, str | None],
) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("bad.jsonl", content), purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                   completion_window="24h")
        assert batch.status == "failed" and batch.failed_at is not None
        assert batch.errors is not None and batch.errors.data
        first = batch.errors.data[0]
        assert (first.code, first.line, first.param) == expected and first.message
        assert sdk.batches.retrieve(batch.id).errors == batch.errors


def test_too_many_lines_fail_validation_and_too_large_files_are_refused(
    base_url: str,
) -> None:
    many = b"{}\n" * (MAX_LINES + 1)  # the count is checked before any line
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("many.jsonl", many), purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                   completion_window="24h")
        assert batch.status == "failed" and batch.errors and batch.errors.data
        assert batch.errors.data[0].code == "too_many_tasks"
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.files.create(file=("huge.jsonl", b"x" * (3 * 1024 * 1024)), purpose="batch")
        assert refused.value.status_code == 413
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.files.create(file=("notes.txt", jsonl([request_line(1)])), purpose="batch")
        assert "jsonl" in refused.value.message
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.files.create(file=("latin.jsonl", b"\xff\xfe{}"), purpose="batch")
        assert refused.value.body["param"] == "file"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.files.create(file=("x.jsonl", b"{}"), purpose="fine-tune")
        assert refused.value.body["param"] == "purpose"  # type: ignore[index]


def test_create_refuses_wrong_parameters_as_openai_does(base_url: str) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("ok.jsonl", jsonl([request_line(1)])),
                                    purpose="batch")
        wrong: list[tuple[dict[str, Any], str]] = [
            ({"endpoint": "/v1/moderations"}, "endpoint"),
            ({"completion_window": "48h"}, "completion_window"),
            ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
            ({"metadata": {"k": "v" * 513}}, "metadata"),
            ({"metadata": {"k": 1}}, "metadata"),
            ({"priority": "high"}, "priority"),
        ]
        for change, param in wrong:
            body = {"input_file_id": uploaded.id, "endpoint": CHAT, "completion_window": "24h",
                    **change}
            with pytest.raises(openai.BadRequestError) as refused:
                sdk.post("/batches", body=body, cast_to=Batch)
            assert refused.value.body["param"] == param, change  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            sdk.batches.create(input_file_id="file-nope", endpoint=CHAT,
                               completion_window="24h")


def test_cancel_before_the_runner_starts_cancels_every_line(base_url: str) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("c.jsonl", jsonl([request_line(n) for n in range(3)])),
                                    purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                   completion_window="24h")
        cancelled = sdk.batches.cancel(batch.id)
        assert cancelled.status == "cancelled" and cancelled.cancelling_at is not None
        assert cancelled.cancelled_at is not None and cancelled.output_file_id is None
        assert cancelled.request_counts is not None
        assert (cancelled.request_counts.completed, cancelled.request_counts.total) == (0, 3)
        assert cancelled.error_file_id is not None
        errors = [json.loads(line) for line in
                  sdk.files.content(cancelled.error_file_id).text.splitlines()]
        assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
            (f"request-{n}", "batch_cancelled") for n in range(3)]
        assert sdk.batches.cancel(batch.id) == cancelled  # cancelling twice is no error
        with pytest.raises(openai.NotFoundError):
            sdk.batches.cancel("batch_nope")


def test_another_tenants_files_and_batches_are_not_there(base_url: str) -> None:
    acme, globex = new_key(base_url, "acme"), new_key(base_url, "globex")
    with client(base_url, acme) as mine, client(base_url, globex) as theirs:
        uploaded = mine.files.create(file=("secret.jsonl", jsonl([request_line(1)])),
                                     purpose="batch")
        batch = mine.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                    completion_window="24h")
        for attempt in (lambda: theirs.files.retrieve(uploaded.id),
                        lambda: theirs.files.content(uploaded.id),
                        lambda: theirs.files.delete(uploaded.id),
                        lambda: theirs.batches.retrieve(batch.id),
                        lambda: theirs.batches.cancel(batch.id),
                        lambda: theirs.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                                      completion_window="24h")):
            with pytest.raises(openai.NotFoundError):
                attempt()
        assert theirs.files.list().data == [] and theirs.batches.list().data == []
        assert mine.batches.retrieve(batch.id).status == batch.status  # untouched
    viewer = new_key(base_url, "acme", role="viewer")
    status, answer = raw(base_url, "GET", "/v1/files", viewer)
    assert status == 403 and answer["error"]["type"]
    status, answer = raw(base_url, "GET", "/v1/batches", "sg-wrong-key")
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"


def test_a_deleted_file_is_gone(base_url: str) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("gone.jsonl", jsonl([request_line(1)])),
                                    purpose="batch")
        status, answer = raw(base_url, "DELETE", f"/v1/files/{uploaded.id}",
                             str(sdk.api_key))
        assert status == 200
        assert exactly(FileDeleted, answer) == FileDeleted(id=uploaded.id, object="file",
                                                           deleted=True)
        for attempt in (lambda: sdk.files.retrieve(uploaded.id),
                        lambda: sdk.files.content(uploaded.id),
                        lambda: sdk.files.delete(uploaded.id),
                        lambda: sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                                   completion_window="24h")):
            with pytest.raises(openai.NotFoundError):
                attempt()


HOSTILE_NAMES = ['quote" and \\ back.jsonl', "new\nline\r\x01.jsonl", "../../etc/passwd.jsonl",
                 "'; DROP TABLE batch_files; --.jsonl", "名前 😀 %22 %41.jsonl"]


def test_hostile_filenames_and_metadata_are_stored_intact(base_url: str) -> None:
    metadata = {"'; DROP TABLE batches; --": "\u2028\"quoted\" \\ 名前 😀",
                "empty": "", "k" * 64: "v" * 512}
    with client(base_url, new_key(base_url, "acme")) as sdk:
        for name in HOSTILE_NAMES:
            uploaded = sdk.files.create(file=(name, jsonl([request_line(1)])), purpose="batch")
            expected = name.replace("%22", '"')  # HTML5 form encoding's one ambiguity
            assert uploaded.filename == expected
            assert sdk.files.retrieve(uploaded.id).filename == expected
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                   completion_window="24h", metadata=metadata)
        assert batch.metadata == metadata
        assert sdk.batches.retrieve(batch.id).metadata == metadata


def test_malformed_uploads_are_refused_in_openais_shape(base_url: str) -> None:
    key = new_key(base_url, "acme")
    boundary = "b0undary"
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"'
            f"\r\n\r\n{{}}\r\n").encode()
    form = f"multipart/form-data; boundary={boundary}"
    for body, content_type, status_wanted in (
            (part, form, 400),  # no closing boundary
            (part + f"--{boundary}--\r\n".encode(), "multipart/form-data", 400),  # no boundary
            (b"{}", "application/json", 415),
            (part.replace(b'name="purpose"', b"") + f"--{boundary}--".encode(), form, 400)):
        status, answer = raw(base_url, "POST", "/v1/files", key, body, content_type)
        assert status == status_wanted, answer
        assert set(answer["error"]) == {"message", "type", "param", "code"}
    status, answer = raw(base_url, "POST", "/v1/files", key,
                         part + f"--{boundary}--\r\n".encode(), form)
    assert status == 200 and exactly(FileObject, answer).filename == "a.jsonl"
    for path in ("/v1/files/x/y", "/v1/batches/x/y", "/v1/batches/x/cancel/more"):
        status, answer = raw(base_url, "GET", path, key)
        assert status in (404, 405) and answer["error"]["message"]


def test_form_parts_reads_what_httpx_writes() -> None:
    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; '
            b"filename=\"a\\\\b%22c%0Ad.jsonl\"\r\nContent-Type: application/octet-stream"
            b"\r\n\r\nline\r\n\r\n--xyz\r\nContent-Disposition: form-data; name=purpose"
            b"\r\n\r\nbatch\r\n--xyz--\r\n")
    parts = form_parts(body, b'multipart/form-data; boundary="xyz"')
    assert parts["file"].filename == 'a\\b"c\nd.jsonl' and parts["file"].content == b"line\r\n"
    assert parts["purpose"].filename is None and parts["purpose"].content == b"batch"
    extended = (b"--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"; "
                b"filename*=utf-8''%E5%90%8D.jsonl\r\n\r\n\r\n--q--")
    assert form_parts(extended, b"multipart/form-data; boundary=q")["file"].filename == "名.jsonl"
    inside = (b"preamble\r\n--q\r\nContent-Disposition: form-data; name=file; filename=f"
              b"\r\n\r\nthis --q is not a delimiter\r\n--q--")
    parts = form_parts(inside, b"multipart/form-data; boundary=q")
    assert bytes(parts["file"].content) == b"this --q is not a delimiter"
    for broken in (b"no delimiter at all", b"--q\r\nContent-Disposition: form-data; name=a",
                   b"--q\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--q",
                   b"--q\r\n\r\nno headers\r\n--q--"):
        with pytest.raises(InvalidRequest):
            form_parts(broken, b"multipart/form-data; boundary=q")


def test_validate_lines_reports_each_bad_line_and_keeps_the_bodies() -> None:
    content = "\n".join([orjson.dumps(request_line(1)).decode(), "{",
                         orjson.dumps(request_line(1)).decode(), "",
                         orjson.dumps(request_line(3, url=CHAT + "x")).decode()])
    found = validate_lines(content, CHAT)
    assert [(e["code"], e["line"]) for e in found.errors] == [
        ("invalid_json_line", 2), ("duplicate_custom_id", 3), ("url_mismatch", 5)]
    good = validate_lines(orjson.dumps(request_line(7)).decode() + "\r\n", CHAT)
    assert good.errors == [] and good.lines == [
        (1, "request-7", orjson.dumps(request_line(7)["body"]).decode())]
    assert validate_lines("\n".join("x" * 3 for _ in range(300)), CHAT).errors.__len__() == 100


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def made_batch(store: RecordStore, clock: Clock, count: int = 3) -> tuple[Batches, str]:
    files = BatchFiles(store, clock)
    batches = Batches(store, files, clock)
    stored = await files.create("acme", "batch", "in.jsonl",
                                jsonl([request_line(n) for n in range(count)]).decode())
    batch = await batches.create("acme", "key-1", {"input_file_id": stored.file_id,
                                                   "endpoint": CHAT, "completion_window": "24h"})
    assert batch.status == "in_progress" and batch.total == count and batch.key_id == "key-1"
    return batches, batch.batch_id


async def set_line(store: RecordStore, batch_id: str, line_no: int, **values: Any) -> None:
    names = list(values)
    marks = ", ".join(f"{name} = {'?' if store.dialect == 'sqlite' else f'${n}'}"
                      for n, name in enumerate(names, 1))
    last = len(names) + 1
    where = ("batch_id = ? AND line_no = ?" if store.dialect == "sqlite"
             else f"batch_id = ${last} AND line_no = ${last + 1}")
    await store.execute(f"UPDATE batch_lines SET {marks} WHERE {where}",
                        [*values.values(), batch_id, line_no])


async def test_finalize_writes_openais_output_and_error_files_once(
    store: RecordStore,
) -> None:
    clock = Clock()
    batches, batch_id = await made_batch(store, clock)
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
    await set_line(store, batch_id, 1, state="done", status_code=200,
                   response=orjson.dumps(answer).decode(), request_id="req-1")
    unfinished = await batches.finalize(batch_id)
    assert unfinished is not None and unfinished.status == "in_progress"  # lines still pending
    await set_line(store, batch_id, 2, state="failed", status_code=400, request_id="req-2",
                   response='{"error": {"message": "bad", "type": "invalid_request_error"}}')
    await set_line(store, batch_id, 3, state="failed",
                   error='{"code": "model_not_found", "message": "no such model"}')
    ended = await asyncio.gather(*(batches.finalize(batch_id) for _ in range(3)))
    done = await batches.get("acme", batch_id)
    assert done is not None and done.status == "completed" and done.completed_at is not None
    assert all(batch is not None and batch.status in ("finalizing", "completed")
               for batch in ended)
    assert (done.completed, done.failed, done.total) == (1, 2, 3)
    files = batches.files
    assert len((await files.listing("acme", purpose="batch_output")).data) == 2  # one winner
    assert done.output_file_id is not None and done.error_file_id is not None
    output = [orjson.loads(line) for line in
              (await files.content("acme", done.output_file_id) or "").splitlines()]
    assert output == [{"id": f"batch_req_{batch_id.removeprefix('batch_')}_1",
                       "custom_id": "request-0", "error": None,
                       "response": {"status_code": 200, "request_id": "req-1", "body": answer}}]
    errors = [orjson.loads(line) for line in
              (await files.content("acme", done.error_file_id) or "").splitlines()]
    assert [e["custom_id"] for e in errors] == ["request-1", "request-2"]
    assert errors[0]["response"]["status_code"] == 400 and errors[0]["error"] is None
    assert errors[1]["response"] is None
    assert errors[1]["error"] == {"code": "model_not_found", "message": "no such model"}
    assert (await batches.finalize(batch_id)) == done  # over: nothing more happens


async def test_cancel_waits_for_running_lines_and_expiry_ends_a_batch(
    store: RecordStore,
) -> None:
    clock = Clock()
    batches, batch_id = await made_batch(store, clock)
    await set_line(store, batch_id, 1, state="running", lease_owner="replica-a",
                   lease_until=clock.now + 60)
    cancelling = await batches.cancel("acme", batch_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at == clock.now
    await set_line(store, batch_id, 1, state="done", status_code=200, response="{}",
                   request_id="r")
    cancelled = await batches.finalize(batch_id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert (cancelled.completed, cancelled.failed) == (1, 0)
    assert cancelled.output_file_id and cancelled.error_file_id
    errors = (await batches.files.content("acme", cancelled.error_file_id) or "").splitlines()
    assert [orjson.loads(e)["error"]["code"] for e in errors] == ["batch_cancelled"] * 2
    empty = await batches.files.create("acme", "batch", "e.jsonl", "")
    failed = await batches.create("acme", None, {"input_file_id": empty.file_id,
                                                 "endpoint": CHAT, "completion_window": "24h"})
    assert failed.status == "failed" and failed.key_id == ""
    with pytest.raises(BatchConflict, match="Cannot cancel a batch with status 'failed'"):
        await batches.cancel("acme", failed.batch_id)

    expiring, expiring_id = await made_batch(store, clock, count=3)
    for line_no in (1, 2):
        await set_line(store, expiring_id, line_no, state="running", lease_owner="replica-a",
                       lease_until=clock.now + 86_400 + 30)
    clock.now += 86_400 + 1
    assert await expiring.expire() == [expiring_id]
    expired = await expiring.get("acme", expiring_id)
    # the running lines' leases are still good: the batch waits for them
    assert expired is not None and expired.status == "in_progress" and expired.expired_at
    # its runner puts line 1 back for a retry; line 2's replica dies and its lease runs out
    await set_line(store, expiring_id, 1, state="pending", lease_owner=None, lease_until=None)
    clock.now += 60
    expired = await expiring.finalize(expiring_id)
    assert expired is not None and expired.status == "expired" and expired.error_file_id
    assert expired.output_file_id is None
    lines = (await expiring.files.content("acme", expired.error_file_id) or "").splitlines()
    assert [orjson.loads(e)["error"]["code"] for e in lines] == ["batch_expired"] * 3
    assert await expiring.expire() == []


def test_render_results_of_no_lines_is_empty() -> None:
    assert render_results("batch_x", [], "completed").output == ""


async def test_a_batch_survives_its_store_being_reopened(store_url: str) -> None:
    clock = Clock()
    first = open_store(store_url)
    await first.open()
    try:
        _, batch_id = await made_batch(first, clock)
    finally:
        await first.close()
    again = open_store(store_url)
    await again.open()
    try:
        found = await Batches(again, BatchFiles(again, clock), clock).get("acme", batch_id)
        assert found is not None and found.status == "in_progress" and found.total == 3
        (pending,), = await again.rows("SELECT count(*) FROM batch_lines WHERE state = 'pending'")
        assert pending == 3
    finally:
        await again.close()


def test_a_batch_past_its_window_is_expired_when_read(base_url: str, store_url: str) -> None:
    with client(base_url, new_key(base_url, "acme")) as sdk:
        uploaded = sdk.files.create(file=("late.jsonl", jsonl([request_line(n) for n in range(2)])),
                                    purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint=CHAT,
                                   completion_window="24h")

        async def backdate() -> None:
            store = open_store(store_url)
            await store.open()
            try:
                mark = "?" if store.dialect == "sqlite" else "$1"
                await store.execute(f"UPDATE batches SET expires_at = 1 WHERE batch_id = {mark}",
                                    (batch.id,))
            finally:
                await store.close()

        asyncio.run(backdate())
        expired = sdk.batches.retrieve(batch.id)
        assert expired.status == "expired" and expired.expired_at is not None
        assert expired.error_file_id is not None
        errors = sdk.files.content(expired.error_file_id).text.splitlines()
        assert {json.loads(line)["custom_id"] for line in errors} == {"request-0", "request-1"}
        assert sdk.files.retrieve(expired.error_file_id).purpose == "batch_output"
