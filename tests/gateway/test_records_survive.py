"""Every request has its row, in SQLite and in PostgreSQL, even when SIGTERM lands mid-load."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import urllib3
import yaml

from switchgear.config import Config

from servers import fetch_records, free_port, gateway

SIMULATED = {"deployments": [{"name": "local", "backend": "simulated",
                              "simulated": {"ttft_ms": 5, "tpot_ms": 2, "mean_output_tokens": 12}}]}
HELLO = [{"role": "user", "content": "Say hello"}]


def test_every_request_has_its_row(make_config: Callable[..., Config], store_url: str) -> None:
    config = make_config({"sim": SIMULATED}, store_url=store_url)
    outcomes: dict[str, int] = {}
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as sdk:
        for index in range(30):
            raw = sdk.chat.completions.with_raw_response.create(
                model="sim", messages=HELLO, max_tokens=4, stream=index % 3 == 0)
            if index % 3 == 0:
                list(raw.parse())
            outcomes[raw.headers["x-request-id"]] = 200
        for model in ("missing-model", "sim"):
            try:
                sdk.chat.completions.with_raw_response.create(model=model, messages=HELLO,
                                                              max_tokens=-1 if model == "sim" else 1)
            except openai.APIStatusError as error:
                outcomes[error.response.headers["x-request-id"]] = error.status_code
    rows = {row.request_id: row for row in fetch_records(store_url)}
    assert {rid: rows[rid].status for rid in outcomes} == outcomes
    assert len(rows) == len(outcomes)
    assert sum(row.stream for row in rows.values()) == 10
    served = [row for row in rows.values() if row.status == 200]
    assert all(row.completion_tokens > 0 and row.deployment == "local" for row in served)


def _hammer(base_url: str, stop: threading.Event, successes: list[str], errors: list[str]) -> None:
    """Send requests until the server goes away; note the request id of every success."""
    http = urllib3.PoolManager(maxsize=1, retries=False, timeout=urllib3.Timeout(connect=2, read=30))
    body = {"model": "sim", "messages": HELLO, "max_tokens": 8}
    while not stop.is_set():
        try:
            response = http.request("POST", base_url + "/chat/completions", json=body)
        except urllib3.exceptions.HTTPError as error:
            errors.append(type(error).__name__)
            time.sleep(0.01)
            continue
        if response.status == 200:
            successes.append(response.headers["x-request-id"])
    http.clear()


def test_sigterm_mid_load_loses_no_finished_request(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    config_file = tmp_path / "switchgear.yaml"
    config: dict[str, Any] = {"server": {"port": port}, "models": {"sim": SIMULATED},
                              "store": {"url": store_url, "flush_interval_ms": 500}}
    config_file.write_text(yaml.safe_dump(config))
    server = subprocess.Popen([sys.executable, "-m", "switchgear", "serve", "--config",
                               str(config_file), "--log-level", "warning"])
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib3.request("GET", base_url.removesuffix("/v1") + "/healthz",
                                   retries=False, timeout=1).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            assert server.poll() is None, "the gateway exited at start-up"
            time.sleep(0.1)
        stop = threading.Event()
        successes: list[str] = []
        errors: list[str] = []
        clients = [threading.Thread(target=_hammer, args=(base_url, stop, successes, errors))
                   for _ in range(8)]
        for client in clients:
            client.start()
        time.sleep(1.5)
        assert successes, "no request succeeded before SIGTERM"
        before_signal = len(successes)
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why.
        assert server.wait(60) in (0, -signal.SIGTERM)
        stop.set()
        for client in clients:
            client.join(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    rows = {row.request_id: row for row in fetch_records(store_url)}
    missing = [rid for rid in successes if rid not in rows]
    assert not missing, f"{len(missing)} of {len(successes)} successful requests have no row"
    assert all(rows[rid].status == 200 for rid in successes)
    assert len(successes) >= before_signal > 0
