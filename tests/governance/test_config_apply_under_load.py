"""An applied config change reaches two gateway processes under load from 32 concurrent
clients, with no failed request, and every record names the version that served it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from switchgear.cli.admin_client import admin_call
from switchgear.config import Config
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, gateway_process, serving_version

ADMIN = "sg-config-admin-0123456789abcdef01234567"
HELLO = [{"role": "user", "content": "Say hello"}]
CLIENTS = 32
#: Seconds of load before the change, and after both replicas serve it.
BEFORE, AFTER = 1.5, 1.5
#: How long both replicas may take to pick the change up ("within a few seconds").
PICKUP_LIMIT = 10.0


def chat_on(name: str, sim: RunningSimulator) -> dict[str, Any]:
    return {"chat": {"deployments": [{"name": name, "backend": "openai_http",
                                      "url": sim.base_url, "model": "sim"}]}}


async def client(base_urls: list[str], stop: asyncio.Event, sent: dict[str, str],
                 failures: list[BaseException], number: int) -> None:
    """Send chats, streamed and not, to the replicas in turn until ``stop``."""
    sdks = [openai.AsyncOpenAI(base_url=url, api_key=ADMIN, max_retries=0) for url in base_urls]
    try:
        for turn in itertools.count(number):
            if stop.is_set():
                return
            sdk, url = sdks[turn % len(sdks)], base_urls[turn % len(sdks)]
            try:
                raw = await sdk.chat.completions.with_raw_response.create(
                    model="chat", messages=HELLO, max_tokens=4, stream=bool(turn % 2))
                answer = raw.parse()
                if isinstance(answer, openai.AsyncStream):
                    assert [chunk async for chunk in answer]
                sent[raw.headers["x-request-id"]] = url
            except Exception as error:  # every failure is a test failure, counted here
                failures.append(error)
    finally:
        for sdk in sdks:
            await sdk.close()


def test_an_applied_change_reaches_two_replicas_under_load_without_a_failed_request(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    a, b = simulators(), simulators()
    config = make_config(chat_on("a", a), store_url)
    with gateway_process(config, tmp_path) as first, gateway_process(config, tmp_path) as second:
        replicas = [first, second]
        root = first.removesuffix("/v1")
        approver = admin_call(root, "POST", "/admin/keys",
                              ADMIN, {"tenant": "ops", "name": "bob", "role": "approver"})

        async def scenario() -> tuple[dict[str, str], list[BaseException], float]:
            stop, sent, failures = asyncio.Event(), {}, []
            clients = [asyncio.create_task(client(replicas, stop, sent, failures, n))
                       for n in range(CLIENTS)]
            await asyncio.sleep(BEFORE)
            change = await asyncio.to_thread(admin_call, root, "POST", "/admin/config/changes",
                                             ADMIN, {"sections": {"models": chat_on("b", b)}})
            await asyncio.to_thread(
                admin_call, root, "POST", f"/admin/config/changes/{change['change_id']}/review",
                approver["secret"], {"approve": True, "comment": "go"})
            await asyncio.to_thread(
                admin_call, root, "POST", f"/admin/config/changes/{change['change_id']}/apply",
                ADMIN, {})
            applied = time.monotonic()
            while not all([await asyncio.to_thread(serving_version, url, ADMIN) == 2
                           for url in replicas]):
                assert time.monotonic() - applied < PICKUP_LIMIT, "a replica did not pick it up"
                await asyncio.sleep(0.05)
            pickup = time.monotonic() - applied
            await asyncio.sleep(AFTER)
            stop.set()
            await asyncio.gather(*clients)
            return sent, failures, pickup

        sent, failures, pickup = asyncio.run(scenario())
    assert failures == []
    records = {r.request_id: r for r in fetch_records(store_url)}
    served = [(sent[request_id], r.config_version, r.deployment, r.status)
              for request_id, r in records.items() if request_id in sent]
    assert len(served) == len(sent) > CLIENTS * 4
    # each version's requests went exactly where that version routes them, and all succeeded
    assert {(version, deployment, status) for _, version, deployment, status in served} == {
        (1, "a", 200), (2, "b", 200)}
    # both replicas served both versions
    assert {(url, version) for url, version, _, _ in served} == {
        (url, version) for url in replicas for version in (1, 2)}
    print(f"\n{len(sent)} requests from {CLIENTS} clients, 0 failed; both replicas served "
          f"version 2 {pickup:.2f}s after apply")
