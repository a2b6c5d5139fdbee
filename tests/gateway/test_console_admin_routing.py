"""GET /admin/routing on a real gateway after real traffic: each deployment's health, ejections,
in flight, EWMA latency and share; the experiment and its canary; the tiers' queues and shedding
(what the console's Routing page shows)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import urllib3

from switchgear.config import parse_config

from servers import gateway

SIM = {"name": "sim", "backend": "simulated", "simulated": {"ttft_ms": 1, "tpot_ms": 0}}
HELLO = [{"role": "user", "content": "hi"}]
TIERS = {"capacity": 4, "interactive": {"max_queue": 8, "wait_target_ms": 1000},
         "standard": {"max_queue": 8, "wait_target_ms": 500},
         "batch": {"max_queue": 8, "wait_target_ms": 300, "headroom": 1},
         "max_waiting": 24}


def test_routing_shows_health_ejections_load_experiment_and_tiers(
        tmp_path: Path, refused_url: Callable[..., str]) -> None:
    dead = {"name": "dead", "backend": "openai_http", "url": refused_url(), "model": "sim",
            "timeouts": {"connect": 1, "ttft": 2, "idle": 2, "total": 4}}
    config = parse_config({
        "models": {
            "chat": {"policy": "priority", "deployments": [dead, SIM]},
            "chat-new": {"deployments": [SIM]},
            "exp": {"variants": [{"model": "chat", "weight": 3},
                                 {"model": "chat-new", "weight": 1, "canary": True}],
                    "sticky": "none"},
        },
        "routing": {"outlier": {"consecutive_failures": 1, "base_ejection_s": 60,
                                "max_ejection_s": 60}},
        "tiers": TIERS,
        "store": {"url": f"sqlite:///{tmp_path}/records.db", "flush_interval_ms": 20},
    })
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="x",
                                                    max_retries=0) as client:
        for _ in range(12):
            client.chat.completions.create(model="exp", messages=HELLO, max_tokens=2)
        response = urllib3.request("GET", base_url.removesuffix("/v1") + "/admin/routing",
                                   timeout=5)
    assert response.status == 200
    state: dict[str, Any] = json.loads(response.data)
    chat = {d["name"]: d for d in state["models"]["chat"]["deployments"]}
    assert chat["dead"]["state"] == "ejected" and chat["dead"]["reason"]
    assert chat["dead"]["ejections"] >= 1 and 0 < chat["dead"]["ejected_for_s"] <= 60
    assert chat["dead"]["consecutive_failures"] >= 1
    assert chat["sim"]["state"] == "healthy" and chat["sim"]["ejected_for_s"] is None
    assert chat["sim"]["in_flight"] == 0 and chat["sim"]["ewma_total_ms"] is not None
    assert chat["sim"]["traffic_share"] > chat["dead"]["traffic_share"] > 0
    experiment = state["models"]["exp"]
    assert experiment["variants"] == {"chat": 3, "chat-new": 1}
    assert experiment["sticky"] == "none"
    canary = experiment["canary"]
    assert canary["variant"] == "chat-new" and canary["rolled_back"] is None
    assert canary["samples"]["canary"] + canary["samples"]["baseline"] == 12
    assert canary["min_samples"] >= 1
    tiers = state["priority"]["tiers"]
    assert set(tiers) == {"interactive", "standard", "batch"}
    assert sum(tier["admitted"] for tier in tiers.values()) == 12
    assert all(tier["shed"] == 0 and tier["waiting"] == 0 for tier in tiers.values())
    assert tiers["batch"]["max_queue"] == 8 and state["priority"]["capacity"] == 4
