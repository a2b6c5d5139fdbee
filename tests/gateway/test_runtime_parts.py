"""The runtime's parts (gateway/state.py): a start that fails half-way, here on a deployment
whose model file is missing (after the store, the record writer and the tracer started, and
beside a backend that did start), stops what had started and leaves nothing running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from switchgear.config import Config
from switchgear.errors import UpstreamConnectError
from switchgear.gateway.state import AppState


def test_a_start_that_fails_half_way_leaves_nothing_running(
        make_config: Callable[..., Config], store_url: str, refused_url: Callable[..., str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the audit key file of a PostgreSQL store
    config = make_config({"chat": {"deployments": [
        {"name": "sim", "backend": "simulated"},
        {"name": "local", "backend": "embedded",
         "embedded": {"model_path": str(tmp_path / "missing.gguf")}},
    ]}}, store_url)
    config = config.model_copy(update={"telemetry": config.telemetry.model_copy(
        update={"otlp_endpoint": refused_url() + "/v1/traces"})})
    before = set(threading.enumerate())

    async def start() -> set[str]:
        state = AppState.build(config)
        with pytest.raises(UpstreamConnectError, match="the embedded model did not load"):
            await state.start()
        started = next(d for d in state.router.deployments() if d.name == "sim")
        with pytest.raises(UpstreamConnectError, match="closed"):
            await started.backend.check()
        return {task.get_name() for task in asyncio.all_tasks()
                if task is not asyncio.current_task()}

    assert asyncio.run(start()) == set()  # no record writer, store pool, exporter task
    # asyncio.run joined its own executor's threads; the store's and the span exporter's end
    # once shut down (a leaked one waits forever)
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
