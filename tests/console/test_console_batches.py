"""The Batches page in headless Chromium: batches made with the official openai client (one run
to completion by the gateway's batch runner, one of another tenant cancelled) are listed as
GET /admin/batches answers the same key: status, request counts, cost, times; a tenant's
operator sees its own tenant's only, and the status filter narrows the list. The endpoint's
refusals are checked over HTTP."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
import pytest
from console_page import Console
from console_site import OTHER_TENANT, TENANT, Site

#: Lines of the batch run to completion.
LINES = 12


def batch_input(lines: int) -> bytes:
    """A Batch API input file of ``lines`` short chat requests to the site's alias."""
    return b"".join(json.dumps({
        "custom_id": f"line-{number}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "chat", "max_tokens": 4,
                 "messages": [{"role": "user", "content": f"Say hello {number}"}]},
    }).encode() + b"\n" for number in range(lines))


def submit(site: Site, key: str, lines: int) -> str:
    """Upload a file of ``lines`` lines and create a batch of it as the key called ``key``;
    the batch's id."""
    with openai.OpenAI(base_url=site.root + "/v1", api_key=site.keys[key],
                       max_retries=0) as sdk:
        uploaded = sdk.files.create(file=("lines.jsonl", io.BytesIO(batch_input(lines))),
                                    purpose="batch")
        return sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"made_by": key}).id


def wait_for(condition: Any, what: str, timeout: float = 60) -> Any:
    """Poll ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def batches(site: Site) -> dict[str, str]:
    """A batch of the first tenant run to completion with every line's request recorded, and
    one of the other tenant cancelled; their ids by name."""
    done = submit(site, "client", LINES)
    cancelled = submit(site, "other-client", LINES)
    with openai.OpenAI(base_url=site.root + "/v1", api_key=site.keys["other-client"],
                       max_retries=0) as sdk:
        sdk.batches.cancel(cancelled)

    def settled() -> bool:
        listed = {b["id"]: b for b in site.admin("/admin/batches")["data"]}
        return bool(listed[done]["status"] == "completed"
                and listed[done]["recorded_requests"] == LINES
                and listed[cancelled]["status"] == "cancelled")

    wait_for(settled, "the batch to complete and the other to be cancelled")
    return {"done": done, "cancelled": cancelled}


def shown_rows(console: Console) -> list[str]:
    """The batch ids of the table's rows, top to bottom."""
    ids: list[str] = console.browser.run(
        "return [...document.querySelectorAll('main#page tr[data-batch]')]"
        ".map((row) => row.dataset.batch)")
    return ids


def test_an_admin_sees_every_tenants_batches_as_the_api_lists_them(
        console: Console, site: Site, batches: dict[str, str]) -> None:
    console.sign_in("admin")
    assert console.open("batches") == "ready"
    listed = site.admin("/admin/batches")["data"]
    assert [b["id"] for b in listed] == [batches["cancelled"], batches["done"]]  # newest first
    assert shown_rows(console) == [b["id"] for b in listed]
    assert console.column("status") == ["cancelled", "completed"]
    assert console.column("tenant") == [OTHER_TENANT, TENANT]
    done = listed[1]
    assert done["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
    assert done["finished_at"] >= done["in_progress_at"] >= done["created_at"]
    assert done["cost"] > 0 and done["lines_per_s"] > 0 and done["progress"] == 1
    row = f"tr[data-batch='{batches['done']}']"
    assert console.values("completed", row) == [LINES]
    assert console.values("total", row) == [LINES]
    assert console.values("failed", row) == [0]
    assert console.values("cost", row) == [done["cost"]]
    assert console.values("finished_at", row) == [done["finished_at"]]
    assert console.values("progress", row) == [1]
    assert console.stat("running") == 0 and console.stat("lines_left") == 0
    assert console.stat("cost") == pytest.approx(sum(b["cost"] for b in listed))
    wrap = "main#page .table-wrap"
    assert console.browser.run(  # every column in sight, none behind a sideways scroll
        f"const w = document.querySelector('{wrap}'); return w.scrollWidth <= w.clientWidth")
    console.screenshot("batches")


def test_a_tenants_operator_sees_only_its_tenants_batches(
        console: Console, site: Site, batches: dict[str, str]) -> None:
    console.sign_in("operator")
    assert console.open("batches") == "ready"
    listed = site.admin("/admin/batches", "operator")["data"]
    assert [b["id"] for b in listed] == [batches["done"]]
    assert shown_rows(console) == [batches["done"]]
    assert console.column("tenant") == [TENANT]


def test_the_status_filter_lists_only_that_status(
        console: Console, site: Site, batches: dict[str, str]) -> None:
    console.sign_in("admin")
    assert console.open("batches") == "ready"
    console.browser.find("select[name=status] option[value='cancelled']").click()
    console.browser.wait(lambda: shown_rows(console) == [batches["cancelled"]],
                         "only the cancelled batch to be listed")
    assert [b["id"] for b in site.admin("/admin/batches?status=cancelled")["data"]] == [
        batches["cancelled"]]


@pytest.mark.parametrize(("key", "path", "status", "param"), [
    ("admin", "/admin/batches?colour=red", 400, "colour"),
    ("admin", "/admin/batches?status=done", 400, "status"),
    ("admin", "/admin/batches?limit=0", 400, "limit"),
    ("admin", "/admin/batches?limit=x", 400, "limit"),
    ("operator", f"/admin/batches?tenant={OTHER_TENANT}", 403, "tenant"),
    ("client", "/admin/batches", 403, None),
])
def test_the_endpoint_refuses_what_it_cannot_answer_in_openais_shape(
        site: Site, key: str, path: str, status: int, param: str | None) -> None:
    answered, body = site.fetch(path, key)
    assert answered == status
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["param"] == param
