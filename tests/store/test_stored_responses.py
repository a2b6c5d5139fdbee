"""Stored Responses in SQLite and PostgreSQL: per tenant, within retention, removed by the
store's maintenance once older than store.responses_retention_days."""

from __future__ import annotations

from typing import Any

from switchgear.config import StoreConfig
from switchgear.store.base import RecordStore
from switchgear.store.maintenance import StoreMaintenance
from switchgear.store.responses import SECONDS_PER_DAY, StoredResponses

NOW = 1_750_000_000.0


def response(response_id: str, created_at: float) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "created_at": created_at, "model": "m",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": f"answer {response_id}"}]}]}


async def test_a_stored_response_is_its_tenants_alone(store: RecordStore) -> None:
    stored = StoredResponses(store, retention_days=30, clock=lambda: NOW)
    before = [{"type": "message", "role": "user", "content": "question"}]
    await stored.save("acme", response("resp_1", NOW), before)
    found = await stored.get("acme", "resp_1")
    assert found is not None and found.response == response("resp_1", NOW)
    assert found.conversation == [*before, *response("resp_1", NOW)["output"]]
    assert await stored.get("globex", "resp_1") is None
    assert not await stored.delete("globex", "resp_1")
    assert await stored.delete("acme", "resp_1")
    assert await stored.get("acme", "resp_1") is None
    assert not await stored.delete("acme", "resp_1")


async def test_responses_past_retention_are_not_served_and_maintenance_removes_them(
    store: RecordStore,
) -> None:
    stored = StoredResponses(store, retention_days=2, clock=lambda: NOW)
    await stored.save("t", response("resp_old", NOW - 3 * SECONDS_PER_DAY), [])
    await stored.save("t", response("resp_new", NOW - SECONDS_PER_DAY), [])
    assert await stored.get("t", "resp_old") is None
    assert await stored.get("t", "resp_new") is not None
    assert await StoredResponses(store, None, clock=lambda: NOW).get("t", "resp_old")
    settings = StoreConfig(url="sqlite:///unused.db", responses_retention_days=2)
    upkeep = await StoreMaintenance(store, lambda: settings, clock=lambda: NOW).round()
    assert upkeep.responses_removed == 1
    assert await StoredResponses(store, None, clock=lambda: NOW).get("t", "resp_old") is None
    assert await stored.get("t", "resp_new") is not None
    kept = StoreConfig(url="sqlite:///unused.db", responses_retention_days=None)
    assert (await StoreMaintenance(store, lambda: kept, clock=lambda: NOW).round()
            ).responses_removed == 0
