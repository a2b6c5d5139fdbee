"""Hostile model names over real HTTP: /metrics stays small and never shows them; rows are
still written, repaired."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import orjson
import urllib3

from switchgear.config import Config
from switchgear.store.records import FIELD_LIMIT

from servers import gateway, wait_for_record

SIMULATED = {"deployments": [{"name": "local", "backend": "simulated",
                              "simulated": {"ttft_ms": 1, "tpot_ms": 1, "mean_output_tokens": 4}}]}
HELLO = [{"role": "user", "content": "Say hello"}]
HUGE = "m" * 1_000_000
NUL = "evil\x00model\x1b[2J"


def test_hostile_model_names_never_reach_metrics_and_rows_are_kept(
        make_config: Callable[..., Config], store_url: str) -> None:
    config = make_config({"sim": SIMULATED}, store_url=store_url)
    ids: dict[str, str] = {}
    with gateway(config) as base_url:
        http = urllib3.PoolManager(retries=False)
        for name, model in (("huge", HUGE), ("nul", NUL), ("sim", "sim")):
            for _ in range(4):
                response = http.request(
                    "POST", base_url + "/chat/completions",
                    body=orjson.dumps({"model": model, "messages": HELLO, "max_tokens": 2}),
                    headers={"content-type": "application/json"})
                assert response.status == (200 if name == "sim" else 404)
                ids[name] = response.headers["x-request-id"]
        metrics = urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics").read()
        rows = {name: wait_for_record(store_url, request_id) for name, request_id in ids.items()}
    text = metrics.decode()
    assert len(metrics) < 200_000
    assert "mmmmmmmm" not in text and "evil" not in text and "\x00" not in text
    assert 'model="unknown"' in text and 'model="sim"' in text
    assert "switchgear_request_log_rejected_total 0.0" in text
    assert rows["huge"].model == "m" * FIELD_LIMIT
    assert rows["nul"].model == "evil\ufffdmodel\ufffd[2J"
    assert rows["sim"].model == "sim" and rows["sim"].status == 200


def test_a_nul_in_a_refused_request_does_not_stop_the_request_log(
        make_config: Callable[..., Config], store_url: str) -> None:
    config = make_config({"sim": SIMULATED}, store_url=store_url)
    config = config.model_copy(update={"auth": config.auth.model_copy(update={"mode": "required"})})
    ids: list[str] = []
    with gateway(config) as base_url:
        http = urllib3.PoolManager(retries=False)
        for model in ("a\x00b", HUGE, *["sim"] * 5):
            response = http.request(
                "POST", base_url + "/chat/completions",
                body=orjson.dumps({"model": model, "messages": HELLO, "max_tokens": 2}),
                headers={"content-type": "application/json"})
            assert response.status == 401
            ids.append(response.headers["x-request-id"])
        rows = [wait_for_record(store_url, request_id) for request_id in ids]
    assert [row.status for row in rows] == [401] * 7
    assert "\x00" not in rows[0].model and len(rows[1].model) <= FIELD_LIMIT
