"""Ledger test data: priced request records at chosen times, written to a real store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from switchgear.config import Config, parse_config
from switchgear.ledger.cost import PriceBook, charges
from switchgear.store import open_store
from switchgear.store.records import RequestRecord

API = {"input_per_million": 3.0, "cached_input_per_million": 0.75, "output_per_million": 15.0}
BOX = {"instance_per_hour": 4.0, "instances": 2, "concurrency": 4}


def ledger_config(store_url: str, capacity: dict[str, Any] | None = None,
                  box: dict[str, Any] | None = None, with_box: bool = True) -> Config:
    """Two models: ``chat`` on a per-token API, ``local`` on a self-hosted box (simulated);
    only ``chat`` unless ``with_box``."""
    local: dict[str, Any] = {"name": "box", "backend": "simulated", "price": box or BOX}
    if capacity is not None:
        local["capacity"] = capacity
    models: dict[str, Any] = {"chat": {"deployments": [{"name": "api", "backend": "simulated",
                                                        "price": API}]}}
    if with_box:
        models["local"] = {"deployments": [local]}
    return parse_config({
        "models": models,
        "store": {"url": store_url, "flush_interval_ms": 20},
        "routing": {"health_check_interval_s": None},
    })


def at(text: str) -> float:
    """Epoch seconds of a UTC ISO 8601 time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def record(config: Config, number: int, when: str, tenant: str, alias: str, *,
           feature: str | None = None, prompt: int = 1000, completion: int = 200,
           cached: int = 0, busy_s: float = 0.0, status: int = 200) -> RequestRecord:
    """A finished request as the gateway records it, priced by ``config``'s price book."""
    deployment = {"chat": "api", "local": "box"}[alias]
    price = PriceBook.of(config).prices[(alias, deployment)]
    parts = charges(price, prompt, completion, cached, busy_s)
    served = status < 400
    received = at(when)
    return RequestRecord(
        request_id=f"req-{number}", tenant=tenant, model=alias,
        deployment=deployment if served else None, operation="chat", stream=False,
        received_at=received, first_token_at=received + 0.1, done_at=received + busy_s + 0.2,
        prompt_tokens=prompt if served else 0, completion_tokens=completion if served else 0,
        status=status, error_type=None if served else "UpstreamError", truncated=False,
        attempts=1, cost=parts.total if served else 0.0, feature=feature,
        cache_status="bypass", saved_cost=0.0, served_alias=alias if served else None,
        cached_tokens=cached if served else 0,
        input_cost=parts.input if served else 0.0, cached_cost=parts.cached if served else 0.0,
        output_cost=parts.output if served else 0.0,
        instance_cost=parts.instance if served else 0.0,
        busy_s=parts.busy_s if served else 0.0)


def steady(config: Config, first: int, start: str, seconds: int, per_second: int,
           alias: str, **fields: Any) -> list[RequestRecord]:
    """``per_second`` requests (``record``'s ``fields``) in each of ``seconds`` seconds from
    ``start``, numbered from ``first``."""
    begin = datetime.fromisoformat(start)
    return [record(config, first + second * per_second + n,
                   (begin + timedelta(seconds=second)).isoformat(), "acme", alias, **fields)
            for second in range(seconds) for n in range(per_second)]


def write(store_url: str, records: Sequence[RequestRecord]) -> None:
    """Store ``records`` (the store's schema migrated first)."""

    async def run() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            await store.write(records)
        finally:
            await store.close()

    asyncio.run(run())
