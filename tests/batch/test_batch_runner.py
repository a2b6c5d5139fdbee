"""The batch runner end to end: the official openai SDK uploads a JSONL file and creates a batch
on a real gateway over a simulator; the runner sends every line through the pipeline at the batch
tier as the batch's key, writes each result as it completes and finalizes the batch. A batch
cancelled mid-way keeps what finished; a replica SIGKILLed mid-batch leaves its lines to another
(PostgreSQL); interactive requests are served first while a batch runs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from openai.types import Batch
from prometheus_client import CollectorRegistry

from switchgear.admission.keys import KeyRing
from switchgear.admission.tiers import TierGate
from switchgear.backends import build_backend
from switchgear.batch.batches import Batches
from switchgear.batch.files import BatchFiles
from switchgear.batch.runner import BatchRunner, LineResult, SpareCapacity, spare_capacity
from switchgear.config import BatchConfig, Config, DeploymentConfig, TelemetryConfig, parse_config
from switchgear.errors import RateLimited
from switchgear.gateway.requests import RequestIds, make_exchange
from switchgear.routing.deployment import Deployment
from switchgear.sections.tiers import TierConfig, TierLimits
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator
from switchgear.store import open_store
from switchgear.store.base import RecordStore
from switchgear.store.migrations import numbered
from switchgear.store.records import RequestRecord
from switchgear.telemetry.metrics import BatchSeries
from switchgear.telemetry.tracing import Tracer

import servers
from servers import create_key, fetch_records, gateway, gateway_process, scrape, total

ADMIN = "sg-test-admin-secret-0123456789abcdef"
PRICE = {"input_per_million": 2.0, "output_per_million": 8.0, "batch_discount": 0.5}
ENDED = ("completed", "failed", "cancelled", "expired")
#: Simulated lines slow enough that a batch is still running when the test acts on it.
SLOW = ModelOptions(ttft_ms=20, tpot_ms=1, mean_output_tokens=6, seed=5)


def batch_config(simulator: RunningSimulator, store_url: str, *, max_concurrency: int = 16,
                 **sections: Any) -> Config:
    """A gateway serving alias ``m`` from ``simulator``, its records in ``store_url``, with
    a fast-polling runner and ``sections`` on top."""
    deployment = {"name": "sim", "backend": "openai_http", "url": simulator.base_url,
                  "model": "m", "max_concurrency": max_concurrency, "price": PRICE}
    return parse_config({
        "models": {"m": {"deployments": [deployment]}},
        "store": {"url": store_url, "flush_interval_ms": 20},
        "batch": {"poll_interval_s": 0.05, "max_backoff_s": 0.2, **sections.pop("batch", {})},
        **sections})


def input_file(count: int, failing: frozenset[int] = frozenset()) -> bytes:
    """A batch input of ``count`` chat lines ``line-N``; those in ``failing`` ask for a model
    nobody serves."""
    return "\n".join(json.dumps({
        "custom_id": f"line-{number}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "nope" if number in failing else "m", "max_tokens": 8,
                 "messages": [{"role": "user", "content": f"question {number}"}]}})
        for number in range(count)).encode()


def submit(client: openai.OpenAI, content: bytes) -> Batch:
    """Upload ``content`` and create a chat batch of it."""
    uploaded = client.files.create(file=("input.jsonl", content), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                 completion_window="24h")


def wait_for(client: openai.OpenAI, batch_id: str, done: Callable[[Batch], bool],
             timeout: float = 120) -> Batch:
    """The batch once ``done`` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.05)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    """The lines of an output or error file (none when there is no file)."""
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def sdk(base_url: str, key: str = ADMIN) -> Iterator[openai.OpenAI]:
    """The official client for the gateway at ``base_url``."""
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)
    try:
        yield client
    finally:
        client.close()


def batch_records(store_url: str) -> list[RequestRecord]:
    """The request records the runner's lines left."""
    return [record for record in fetch_records(store_url) if record.api == "openai.batch"]


def wait_for_records(store_url: str, count: int) -> list[RequestRecord]:
    """The batch lines' records, once at least ``count`` are written."""
    deadline = time.monotonic() + 30
    while len(found := batch_records(store_url)) < count:
        assert time.monotonic() < deadline, f"{len(found)} batch records of {count}"
        time.sleep(0.1)
    return found


def test_a_batch_of_1000_lines_runs_to_completion_as_its_key(
        monkeypatch: pytest.MonkeyPatch, store_url: str,
        simulators: Callable[..., RunningSimulator]) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    failing = frozenset(range(0, 1000, 100))
    with gateway(batch_config(simulators(), store_url)) as base_url:
        key = create_key(base_url, ADMIN, tenant="acme", role="client")
        with sdk(base_url, key["secret"]) as client:
            created = submit(client, input_file(1000, failing))
            batch = wait_for(client, created.id, lambda b: b.status in ENDED)
            output = results(client, batch.output_file_id)
            errors = results(client, batch.error_file_id)
            metrics = scrape(base_url)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed,
            batch.request_counts.failed) == (1000, 990, 10)
    # every line exactly once, answered or failed
    assert sorted(line["custom_id"] for line in output + errors) == sorted(
        f"line-{number}" for number in range(1000))
    assert {line["response"]["status_code"] for line in output} == {200}
    assert all(line["response"]["body"]["object"] == "chat.completion" for line in output)
    assert {line["custom_id"] for line in errors} == {f"line-{number}" for number in failing}
    assert {(line["response"]["status_code"], line["response"]["body"]["error"]["code"])
            for line in errors} == {(404, "model_not_found")}
    # each line ran once, as a request of the batch's key and tenant at the batch tier, and
    # each answer's request id is its record's
    records = {record.request_id: record for record in wait_for_records(store_url, 1000)}
    assert len(records) == 1000
    answered = [line["response"]["request_id"] for line in output]
    assert len(set(answered)) == 990 and set(answered) <= set(records)
    for request_id in answered:
        record = records[request_id]
        assert (record.tenant, record.key_id, record.priority, record.status) == (
            "acme", key["key"]["id"], "batch", 200)
        # tokens at half price: the deployment's batch discount
        assert record.cost == pytest.approx(
            (record.prompt_tokens * 2.0 + record.completion_tokens * 8.0) / 1e6 * 0.5)
    assert total(metrics, "switchgear_batch_lines_total", state="done") == 990
    assert total(metrics, "switchgear_batch_lines_total", state="failed") == 10
    assert total(metrics, "switchgear_batch_lines_in_flight") == 0


def test_a_batch_cancelled_mid_way_keeps_what_finished(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    store_url = f"sqlite:///{tmp_path}/records.db"
    config = batch_config(simulators(SLOW), store_url, batch={"max_in_flight": 4})
    with gateway(config) as base_url, sdk(base_url) as client:
        created = submit(client, input_file(400))
        wait_for(client, created.id, lambda b: b.request_counts is not None
                 and b.request_counts.completed >= 20)
        client.batches.cancel(created.id)
        batch = wait_for(client, created.id, lambda b: b.status in ENDED)
        output = results(client, batch.output_file_id)
        errors = results(client, batch.error_file_id)

    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None
    done = batch.request_counts.completed
    assert 20 <= done < 400 and batch.request_counts.failed == 0
    assert len(output) == done
    assert {line["response"]["status_code"] for line in output} == {200}
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert sorted(line["custom_id"] for line in output + errors) == sorted(
        f"line-{number}" for number in range(400))


def test_a_replica_killed_mid_batch_leaves_its_lines_to_another(
        tmp_path: Path, simulators: Callable[..., RunningSimulator],
        monkeypatch: pytest.MonkeyPatch) -> None:
    schema = f"sg_test_batch_kill_{time.time_ns()}"
    store_url = f"{servers.POSTGRES_URL}?schema={schema}"
    # a short lease, so the survivor takes over the dead replica's running lines quickly
    config = batch_config(simulators(SLOW), store_url,
                          batch={"max_in_flight": 4, "lease_s": 1.0})
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(servers.subprocess, "Popen", recording)
    try:
        with gateway_process(config, tmp_path) as first_url, sdk(first_url) as client:
            created = submit(client, input_file(300))
            wait_for(client, created.id, lambda b: b.request_counts is not None
                     and b.request_counts.completed >= 30)
            started[0].send_signal(signal.SIGKILL)
            started[0].wait(10)
            left = asyncio.run(batch_lines(store_url, created.id))
        with gateway(config) as second_url, sdk(second_url) as client:
            batch = wait_for(client, created.id, lambda b: b.status in ENDED)
            output = results(client, batch.output_file_id)
            errors = results(client, batch.error_file_id)
        lines = asyncio.run(batch_lines(store_url, created.id))
        records = {record.request_id for record in batch_records(store_url)}
    finally:
        asyncio.run(servers.drop_schema(schema))

    # killed with lines done, and lines still to do, some of them running (leased)
    killed = {owner for state, owner, _ in left if state == "done"}
    assert len(killed) == 1
    assert {state for state, _, _ in left} >= {"done", "running"}
    assert batch.status == "completed" and errors == []
    # no line lost, none answered twice
    assert sorted(line["custom_id"] for line in output) == sorted(
        f"line-{number}" for number in range(300))
    answered = [line["response"]["request_id"] for line in output]
    assert len(set(answered)) == 300
    assert {request_id for _, _, request_id in lines} == set(answered)
    # the survivor finished the rest, the dead replica's running lines too, each line once
    # with its record
    survivors = {owner for _, owner, _ in lines} - killed
    assert len(survivors) == 1
    finished_after = {request_id for _, owner, request_id in lines if owner in survivors}
    assert len(finished_after) == 300 - sum(state == "done" for state, _, _ in left)
    assert finished_after <= records


async def batch_lines(store_url: str, batch_id: str) -> list[tuple[str, str, str]]:
    """(state, lease owner, request id) of each of the batch's lines, in order (PostgreSQL)."""
    store = open_store(store_url)
    await store.open()
    try:
        rows = await store.rows("SELECT state, lease_owner, request_id FROM batch_lines "
                                "WHERE batch_id = $1 ORDER BY line_no", (batch_id,))
    finally:
        await store.close()
    return [(str(state), str(owner), str(request_id)) for state, owner, request_id in rows]


def test_requests_of_higher_tiers_go_first_while_a_batch_runs(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    store_url = f"sqlite:///{tmp_path}/records.db"
    tiers = {"capacity": 4, "standard": {"max_queue": 100, "wait_target_ms": 30_000}}
    config = batch_config(simulators(SLOW), store_url, max_concurrency=8, tiers=tiers,
                          batch={"max_in_flight": 4})
    with gateway(config) as base_url, sdk(base_url) as client:
        created = submit(client, input_file(200))
        wait_for(client, created.id, lambda b: b.request_counts is not None
                 and b.request_counts.completed >= 10)

        def ask(number: int) -> int:
            response = client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": f"now {number}"}])
            return response.http_response.status_code

        with ThreadPoolExecutor(16) as pool:  # four times the gate's places, at once
            statuses = list(pool.map(ask, range(48)))
        batch = wait_for(client, created.id, lambda b: b.status in ENDED)
        metrics = scrape(base_url)

    assert statuses == [200] * 48
    assert total(metrics, "switchgear_shed_requests_total", priority="standard") == 0
    # the runner stood back while those requests waited, and the batch still finished
    assert total(metrics, "switchgear_batch_yields_total") > 0
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 200


async def test_spare_capacity_is_none_while_higher_tiers_wait_else_a_share_of_free_places(
) -> None:
    config = DeploymentConfig(name="sim", backend="simulated", max_concurrency=10)
    deployment = Deployment("m", config, build_backend(config))
    settings = BatchConfig(max_share=0.5, max_in_flight=3, reserve=0)
    assert spare_capacity(None, [deployment], settings, 0) == SpareCapacity(3, False)
    wide = BatchConfig(max_share=0.5, max_in_flight=32, reserve=0)
    assert spare_capacity(None, [deployment], wide, 0) == SpareCapacity(5, False)
    deployment.in_flight = 8  # four of them the runner's: one more within its half
    assert spare_capacity(None, [deployment], wide, 4) == SpareCapacity(1, False)
    deployment.in_flight = 9  # others took the rest: one place free
    assert spare_capacity(None, [deployment], wide, 0) == SpareCapacity(1, False)
    deployment.in_flight = 0
    gate = TierGate(TierConfig(capacity=4, batch=TierLimits(max_queue=1000, wait_target_ms=5000,
                                                            headroom=1)))
    held = [await gate.acquire("batch") for _ in range(2)]
    # the gate leaves the batch tier its places less its headroom
    assert spare_capacity(gate.snapshot(), [deployment], wide, 2) == SpareCapacity(1, False)
    held += [await gate.acquire("standard") for _ in range(2)]
    waiting = asyncio.ensure_future(gate.acquire("standard"))
    await asyncio.sleep(0)
    assert spare_capacity(gate.snapshot(), [deployment], wide, 2) == SpareCapacity(0, True)
    held.pop().release()
    (await waiting).release()
    assert spare_capacity(gate.snapshot(), [deployment], wide, 2) == SpareCapacity(0, False)
    for slot in held:
        slot.release()


async def test_the_gate_keeps_the_reserve_from_every_batch_tier_request() -> None:
    # Enforced where a place is taken, not only in the runner's estimate: a line the runner
    # started on a snapshot that is already stale still waits.
    assert TierConfig(capacity=12).reserving(0.3).batch.headroom == 4
    assert TierConfig(capacity=12, batch=TierLimits(
        max_queue=1000, wait_target_ms=10, headroom=6)).reserving(0.3).batch.headroom == 6
    assert TierConfig(capacity=1).reserving(0.3).batch.headroom == 0
    assert TierConfig(capacity=2).reserving(0.9).batch.headroom == 1  # never every place
    gate = TierGate(TierConfig(capacity=4).reserving(0.3))  # one place kept
    held = [await gate.acquire("batch") for _ in range(3)]
    waiting = asyncio.ensure_future(gate.acquire("batch"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    held.append(await asyncio.wait_for(gate.acquire("interactive"), 1))  # every place taken
    held.pop(0).release()  # three taken: the batch tier still waits for its share
    await asyncio.sleep(0.01)
    assert not waiting.done()
    held.pop(0).release()
    held.append(await asyncio.wait_for(waiting, 1))
    for slot in held:
        slot.release()


async def test_the_reserve_keeps_places_free_for_higher_tiers_peaks() -> None:
    configs = [DeploymentConfig(name=f"sim-{n}", backend="simulated", max_concurrency=4)
               for n in range(3)]
    deployments = [Deployment("m", config, build_backend(config)) for config in configs]
    settings = BatchConfig(max_share=1, reserve=0.3)  # 0.3 of 12 places: 4 kept free
    assert spare_capacity(None, deployments, settings, 0) == SpareCapacity(8, False)
    deployments[0].in_flight, deployments[1].in_flight = 4, 2  # six busy: two more may start
    assert spare_capacity(None, deployments, settings, 0) == SpareCapacity(2, False)
    deployments[1].in_flight = 4  # eight busy: the reserve is all that is free
    assert spare_capacity(None, deployments, settings, 0) == SpareCapacity(0, False)
    for deployment in deployments:
        deployment.in_flight = 0
    # the gate keeps the reserve too, or the batch tier's headroom where that is more
    gate = TierGate(TierConfig(capacity=10).reserving(settings.reserve))
    held = [await gate.acquire("interactive") for _ in range(5)]
    assert spare_capacity(gate.snapshot(), deployments, settings, 0) == SpareCapacity(2, False)
    roomy = TierGate(TierConfig(capacity=10, batch=TierLimits(
        max_queue=1000, wait_target_ms=5000, headroom=6)).reserving(settings.reserve))
    held += [await roomy.acquire("interactive") for _ in range(3)]
    assert spare_capacity(roomy.snapshot(), deployments, settings, 0) == SpareCapacity(1, False)
    # a single place is never reserved: an idle one-place deployment still takes batch work
    lone = DeploymentConfig(name="lone", backend="simulated", max_concurrency=1)
    assert spare_capacity(None, [Deployment("m", lone, build_backend(lone))], settings,
                          0) == SpareCapacity(1, False)
    for slot in held:
        slot.release()


def store_runner(store: RecordStore, batches: Batches) -> BatchRunner:
    """A runner over ``store`` whose claims and writes are called by the test (not started)."""
    serving = SimpleNamespace(config=parse_config({"batch": {"poll_interval_s": 0.05}}))
    return BatchRunner(store, lambda: serving, batches, KeyRing(store),
                       Tracer(TelemetryConfig()), make_exchange, RequestIds().new,
                       BatchSeries(CollectorRegistry()))


async def test_a_line_has_one_result_whoever_held_it_and_refused_lines_wait(
        store: RecordStore) -> None:
    files = BatchFiles(store)
    batches = Batches(store, files)
    uploaded = await files.create("default", "batch", "input.jsonl", input_file(3).decode())
    batch = await batches.create("default", None, {
        "input_file_id": uploaded.file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})
    first, second = store_runner(store, batches), store_runner(store, batches)

    claimed = sorted(await first.claim(10, lease_s=0.05), key=lambda line: line.line_no)
    assert [line.custom_id for line in claimed] == ["line-0", "line-1", "line-2"]
    assert await second.claim(10, lease_s=60) == []  # leased to the first
    await asyncio.sleep(0.1)  # the first's leases pass (as when it dies)
    taken = sorted(await second.claim(10, lease_s=60), key=lambda line: line.line_no)
    assert [(line.line_no, line.attempts) for line in taken] == [
        (line.line_no, 2) for line in claimed]

    answer = LineResult("done", 200, {"object": "chat.completion"}, "req_first")
    assert not await first.write(claimed[0], answer)  # too late: the line is the second's
    assert await second.write(taken[0], replace(answer, request_id="req_second"))
    refused = LineResult.of_error(RateLimited("Rate limit reached.", retry_after=30), "req_x")
    assert refused.state == "retry"
    assert await second.write(taken[1], refused)
    # the refused line waits out its Retry-After; the third is still the second's
    assert await first.claim(10, lease_s=60) == []
    await second.stop()  # gives the line it still runs back
    assert [line.line_no for line in await first.claim(10, lease_s=60)] == [taken[2].line_no]

    rows = await store.rows(numbered(store.dialect, "SELECT custom_id, state, request_id FROM "
                                     "batch_lines WHERE batch_id = ? ORDER BY line_no"),
                            (batch.batch_id,))
    assert [tuple(row) for row in rows] == [("line-0", "done", "req_second"),
                                            ("line-1", "pending", None),
                                            ("line-2", "running", None)]
    counted = await batches.get("default", batch.batch_id)
    assert counted is not None and (counted.completed, counted.failed) == (1, 0)


async def test_runners_claiming_at_once_never_share_a_line(store: RecordStore) -> None:
    files = BatchFiles(store)
    batches = Batches(store, files)
    uploaded = await files.create("default", "batch", "input.jsonl", input_file(300).decode())
    await batches.create("default", None, {
        "input_file_id": uploaded.file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h"})

    async def claim_all(runner: BatchRunner) -> list[int]:
        taken = []
        while lines := await runner.claim(7, lease_s=60):
            taken += [line.line_no for line in lines]
        return taken

    claimed = await asyncio.gather(*(claim_all(store_runner(store, batches)) for _ in range(4)))
    assert sorted(number for numbers in claimed for number in numbers) == list(range(1, 301))
