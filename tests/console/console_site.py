"""The site the console tests look at: a real gateway over a simulator upstream, keys of every
role in two tenants, real traffic sent with the official openai client, and a pending config
change. One per test module (module-scoped fixtures in conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import parse_config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator, start_simulator

from servers import BackgroundLoop, create_key, gateway

#: The bootstrap admin key (from the environment, as in production).
ADMIN_KEY = "sg-console-admin-0123456789abcdef0123456789"
#: The tenants: the first holds a key of every role, the second an operator and a client.
TENANT, OTHER_TENANT = "acme", "globex"
#: The keys made over the admin API: name -> (tenant, role).
KEYS = {"operator": (TENANT, "operator"), "approver": (TENANT, "approver"),
        "viewer": (TENANT, "viewer"), "client": (TENANT, "client"),
        "other-operator": (OTHER_TENANT, "operator"), "other-client": (OTHER_TENANT, "client")}
#: A key's own spending budget (per UTC day), so the cost page has a budget to show.
KEY_BUDGETS = {"client": {"daily": 50.0}}
#: Requests each client sends (plain and streamed), so each tenant's rows are told apart.
TRAFFIC = {"client": (5, 2), "other-client": (2, 1)}
#: Simulated timings: quick, but with a first token late enough to show as a number.
UPSTREAM = ModelOptions(ttft_ms=8, tpot_ms=1, mean_output_tokens=8, seed=7)
PRICE = {"input_per_million": 3_000, "output_per_million": 15_000}
HELLO = [{"role": "user", "content": "Say hello to the console"}]


class AdminRefused(AssertionError):
    """The admin API answered with an error (status and OpenAI-shaped message kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass(frozen=True)
class Site:
    """A running gateway and what the tests know about it."""

    root: str
    upstream: RunningSimulator
    keys: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    sent: dict[str, list[str]] = field(default_factory=dict)

    @property
    def console(self) -> str:
        """The console's address."""
        return self.root + "/ui"

    def fetch(self, path: str, key: str = "admin", method: str = "GET",
              body: Any = None) -> tuple[int, Any]:
        """Call the admin API as the key called ``key``; the status and the parsed answer."""
        return self.fetch_as(self.keys[key], path, method, body)

    def fetch_as(self, secret: str, path: str, method: str = "GET",
                 body: Any = None) -> tuple[int, Any]:
        """Call the admin API with the bearer ``secret``; the status and the parsed answer."""
        response = urllib3.request(method, self.root + path, json=body, timeout=30,
                                   headers={"Authorization": f"Bearer {secret}"})
        return response.status, json.loads(response.data)

    def admin(self, path: str, key: str = "admin", method: str = "GET", body: Any = None) -> Any:
        """The admin API's answer to ``path`` for the key called ``key`` (AdminRefused if it is
        an error)."""
        status, answer = self.fetch(path, key, method, body)
        if status >= 400:
            raise AdminRefused(status, answer["error"]["message"])
        return answer


def chat_models(upstream: RunningSimulator, weights: dict[str, float] | None = None
                ) -> dict[str, Any]:
    """The ``models`` section: alias chat over two priced deployments of the simulator, sim-a
    and sim-b (equal weights unless ``weights`` says otherwise)."""
    weights = weights or {"sim-a": 1.0, "sim-b": 1.0}
    return {"chat": {"deployments": [
        {"name": name, "backend": "openai_http", "url": upstream.base_url, "model": "sim",
         "price": PRICE, "weight": weight} for name, weight in weights.items()]}}


def site_config(store_url: str, upstream: RunningSimulator) -> Any:
    """The models of ``chat_models`` (two deployments, so routing has shares to show), with one
    SLO on the model and one per tenant (the second tenant's met by no request: its budget is
    spent and its alerts fire)."""
    objectives = [
        {"name": "chat-availability", "owner": "platform", "sli": {"kind": "availability"},
         "scope": {"model": "chat"}, "target": 0.99},
        *({"name": f"{tenant}-latency", "owner": tenant, "target": 0.9,
           "scope": {"tenant": tenant},
           "sli": {"kind": "latency", "measure": "e2e", "threshold": threshold}}
          for tenant, threshold in ((TENANT, "2.5s"), (OTHER_TENANT, "1ms")))]
    return parse_config({
        "models": chat_models(upstream),
        "store": {"url": store_url, "flush_interval_ms": 20},
        "cache": {"enabled": False},
        "slo": {"objectives": objectives, "evaluate_every": 0.2},
    })


def send_traffic(site: Site, traffic: dict[str, tuple[int, int]] = TRAFFIC
                 ) -> dict[str, list[str]]:
    """Requests through the official openai client, ``traffic`` naming each client key's plain
    and streamed ones; their request ids."""
    sent: dict[str, list[str]] = {}
    for name, (plain, streamed) in traffic.items():
        ids = sent.setdefault(name, [])
        with openai.OpenAI(base_url=site.root + "/v1", api_key=site.keys[name],
                           max_retries=0) as sdk:
            for _ in range(plain):
                answer = sdk.chat.completions.with_raw_response.create(
                    model="chat", messages=HELLO, max_tokens=8)
                ids.append(answer.headers["x-request-id"])
            for _ in range(streamed):
                with sdk.chat.completions.with_streaming_response.create(
                        model="chat", messages=HELLO, max_tokens=8, stream=True) as stream:
                    ids.append(stream.headers["x-request-id"])
                    for _ in stream.iter_lines():
                        pass
    return sent


def wait_for_records(site: Site, count: int, timeout: float = 30) -> None:
    """Return once the admin API lists ``count`` request records (the writer is batched) and
    the SLO monitor has evaluated all of them, so what the pages show no longer moves."""
    deadline = time.monotonic() + timeout

    def settled() -> bool:
        records = site.admin(f"/admin/records?limit={count + 10}")["data"]
        slos = site.admin("/admin/slo")["data"]
        return len(records) >= count and all(
            slo["requests"] == count for slo in slos if slo["scope"] == {"model": "chat"})

    while not settled():
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} requests not all recorded and evaluated after "
                                 f"{timeout}s")
        time.sleep(0.05)


@contextmanager
def running_site(store_url: str) -> Iterator[Site]:
    """Start the simulator and a gateway recording to ``store_url``, make the keys and send the
    traffic; yield the Site; stop everything at the end."""
    with ExitStack() as stack, pytest.MonkeyPatch.context() as env:
        env.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN_KEY)
        loop = BackgroundLoop()
        stack.callback(loop.close)
        upstream: RunningSimulator = loop.run(start_simulator(UPSTREAM))
        stack.callback(lambda: loop.run(upstream.stop()))
        base_url = stack.enter_context(gateway(site_config(store_url, upstream)))
        site = Site(base_url.removesuffix("/v1"), upstream, {"admin": ADMIN_KEY})
        for name, (tenant, role) in KEYS.items():
            created = create_key(base_url, ADMIN_KEY, tenant=tenant, name=name, role=role,
                                 **({"budget": KEY_BUDGETS[name]} if name in KEY_BUDGETS else {}))
            site.keys[name] = created["secret"]
            site.key_ids[name] = created["key"]["id"]
        site.sent.update(send_traffic(site))
        wait_for_records(site, sum(len(ids) for ids in site.sent.values()))
        yield site
