"""SLOs end to end: a real gateway in front of a real simulator, a real webhook receiver, windows
compressed by ``time_scale``; the page fires when the simulator fails and resolves after."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import urllib3
from aiohttp import web
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import Config, parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop, fetch_records, free_port, gateway

HELLO = [{"role": "user", "content": "Say hello"}]
#: 1h becomes 7.2s, 5m 0.6s, 30d 86 minutes: longer than any test here.
TIME_SCALE = 0.002
#: The simulator's failures must reach the client: no ejection of the only deployment.
NO_EJECTION = {"outlier": {"consecutive_failures": 1_000_000, "min_requests": 1_000_000},
               "health_check_interval_s": None}


class WebhookReceiver:
    """An aiohttp server on loopback that keeps every JSON body POSTed to /hook."""

    def __init__(self, background: BackgroundLoop) -> None:
        self.background = background
        self.messages: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)

    async def _hook(self, request: web.Request) -> web.Response:
        self.messages.append(await request.json())
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        self.background.run(self._start())

    def stop(self) -> None:
        self.background.run(self.runner.cleanup())

    def statuses(self, severity: str) -> list[str]:
        return [m["status"] for m in self.messages
                if m["alerts"][0]["labels"]["severity"] == severity]


@pytest.fixture
def receiver(background: BackgroundLoop) -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver(background)
    hook.start()
    yield hook
    hook.stop()


class Traffic:
    """One client thread sending chat requests through the official SDK until stopped."""

    def __init__(self, base_url: str, models: tuple[str, ...] = ("chat",)) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
        self.models = models
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.chat.completions.create(
                    model=self.models[self.sent % len(self.models)], messages=HELLO)
            except openai.APIStatusError:
                self.failed += 1
            self.sent += 1
            time.sleep(0.005)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def slo_config(store_url: str, sim: RunningSimulator, objectives: list[dict[str, Any]],
               other: RunningSimulator | None = None) -> Config:
    def deployment(server: RunningSimulator) -> dict[str, Any]:
        return {"deployments": [{"name": "sim", "backend": "openai_http", "url": server.base_url,
                                 "model": "sim"}]}

    models = {"chat": deployment(sim), **({"other": deployment(other)} if other else {})}
    return parse_config({
        "models": models, "routing": NO_EJECTION, "cache": {"enabled": False},
        "store": {"url": store_url, "flush_interval_ms": 20},
        "slo": {"objectives": objectives, "evaluate_every": 0.1, "time_scale": TIME_SCALE},
    })


def slo_report(base_url: str) -> dict[str, Any]:
    response = urllib3.request("GET", base_url.removesuffix("/v1") + "/admin/slo", timeout=5)
    assert response.status == 200, response.data
    report: dict[str, Any] = json.loads(response.data)
    return report


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextmanager
def failing(sim: RunningSimulator, background: BackgroundLoop) -> Iterator[None]:
    """Every request to ``sim`` fails with a 500 inside the block."""

    async def set_faults(faults: Faults) -> None:
        sim.state.faults = faults

    background.run(set_faults(Faults(error_rate=1.0)))
    try:
        yield
    finally:
        background.run(set_faults(Faults()))


def test_page_fires_when_the_model_fails_and_resolves_after(
        store_url: str, simulators: Callable[..., RunningSimulator], receiver: WebhookReceiver,
        background: BackgroundLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = simulators()
    monkeypatch.setenv("SG_TEST_SLO_WEBHOOK", receiver.url)
    objective = {"name": "chat-availability", "owner": "team-chat", "sli": {"kind": "availability"},
                 "scope": {"model": "chat"}, "target": 0.995,
                 "alerting": {"webhook_url_env": "SG_TEST_SLO_WEBHOOK"}}
    with gateway(slo_config(store_url, sim, [objective])) as base_url, Traffic(base_url) as load:
        # Baseline: healthy traffic for longer than the page's long window (1h = 7.2s here).
        assert wait_until(lambda: load.sent > 50, 30)
        time.sleep(8)
        healthy = slo_report(base_url)["data"][0]
        assert healthy["requests"] > 50 and healthy["bad"] == 0
        assert healthy["alerts"]["page"]["state"] == "ok"
        assert healthy["error_budget_remaining"] == 1.0
        assert receiver.messages == []

        with failing(sim, background):
            assert wait_until(lambda: "firing" in receiver.statuses("page"), 30), \
                receiver.messages
        page = next(m for m in receiver.messages if m["alerts"][0]["labels"]["severity"] == "page")
        assert page["alerts"][0]["labels"] == {
            "alertname": "SLOErrorBudgetBurn", "slo": "chat-availability", "severity": "page",
            "owner": "team-chat", "model": "chat"}
        assert page["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert load.failed > 0

        # Recovered: the page resolves once the errors leave the short windows.
        assert wait_until(lambda: receiver.statuses("page") == ["firing", "resolved"], 60), \
            receiver.messages
        resolved = next(m for m in receiver.messages if m["status"] == "resolved"
                        and m["alerts"][0]["labels"]["severity"] == "page")["alerts"][0]
        assert resolved["endsAt"] > resolved["startsAt"]
        report = slo_report(base_url)["data"][0]
        assert report["alerts"]["page"]["state"] == "ok"
        assert report["error_budget_remaining"] < 1.0

        result = CliRunner().invoke(main, ["slo", "status", "--url",
                                           base_url.removesuffix("/v1")])
        assert result.exit_code == 0, result.output
        assert "chat-availability" in result.output and "team-chat" in result.output


def test_error_budget_agrees_with_the_records(
        store_url: str, simulators: Callable[..., RunningSimulator],
        background: BackgroundLoop) -> None:
    """Mixed failures and latencies on two models; the SLOs count only the chat model's."""
    sim = simulators(faults=Faults(error_rate=0.2))
    other = simulators(faults=Faults(error_rate=0.5))
    objectives = [
        {"name": "chat-availability", "owner": "a", "sli": {"kind": "availability"},
         "scope": {"model": "chat"}, "target": 0.9},
        {"name": "chat-latency", "owner": "b", "scope": {"model": "chat"}, "target": 0.5,
         "sli": {"kind": "latency", "measure": "e2e", "threshold": "10ms"}},
    ]
    config = slo_config(store_url, sim, objectives, other)
    with gateway(config) as base_url:
        with Traffic(base_url, ("chat", "other")) as load:
            assert wait_until(lambda: load.sent >= 200, 60)
        assert wait_until(lambda: len(fetch_records(store_url)) == load.sent, 10)
        written = time.time()
        assert wait_until(lambda: all(e["evaluated_at"] > written
                                      for e in slo_report(base_url)["data"]), 10)
        report = {e["name"]: e for e in slo_report(base_url)["data"]}

    chat = [r for r in fetch_records(store_url) if r.model == "chat"]
    bad = sum(r.status >= 500 for r in chat)
    slow = sum(r.done_at is not None and r.done_at - r.received_at > 0.01 for r in chat)
    assert 0 < bad < len(chat) and len(chat) < load.sent
    availability, latency = report["chat-availability"], report["chat-latency"]
    assert (availability["requests"], availability["bad"]) == (len(chat), bad)
    assert availability["error_budget_remaining"] == pytest.approx(1 - bad / len(chat) / 0.1)
    assert availability["sli"] == pytest.approx(1 - bad / len(chat))
    assert (latency["requests"], latency["bad"]) == (len(chat), slow)
    assert latency["error_budget_remaining"] == pytest.approx(1 - slow / len(chat) / 0.5)


def test_viewers_see_only_their_tenants_slos(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    admin = "sg-test-admin-secret-0123456789abcdef"
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", admin)
    sim = {"deployments": [{"name": "local", "backend": "simulated"}]}
    objectives = [{"name": f"{tenant}-up", "owner": tenant, "sli": {"kind": "availability"},
                   "scope": {"tenant": tenant}, "target": 0.99} for tenant in ("acme", "initech")]
    config = parse_config({"models": {"chat": sim},
                           "store": {"url": f"sqlite:///{tmp_path}/records.db"},
                           "slo": {"objectives": objectives}})
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")

        def get(path: str, token: str) -> tuple[int, Any]:
            response = urllib3.request("GET", root + path, timeout=5,
                                       headers={"Authorization": f"Bearer {token}"})
            return response.status, json.loads(response.data)

        def key(role: str) -> str:
            response = urllib3.request(
                "POST", root + "/admin/keys", timeout=5, json={
                    "tenant": "acme", "name": role, "role": role},
                headers={"Authorization": f"Bearer {admin}"})
            assert response.status == 201
            secret: str = json.loads(response.data)["secret"]
            return secret

        status, everything = get("/admin/slo", admin)
        assert status == 200
        assert [e["name"] for e in everything["data"]] == ["acme-up", "initech-up"]
        status, own = get("/admin/slo", key("viewer"))
        assert status == 200 and [e["name"] for e in own["data"]] == ["acme-up"]
        assert get("/admin/slo?tenant=initech", key("operator"))[0] == 403
        status, refused = get("/admin/slo", key("client"))
        assert status == 403 and "cannot" in refused["error"]["message"]
