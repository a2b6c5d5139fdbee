"""No request leaves a reference cycle of the gateway's objects behind: every API, streamed and
not, refused, guarded, answered from the cache, and failed over from a deployment that refuses
connections. A cycle is freed only by the garbage collector: one per request made every
Responses call cost a full collection of the heap every few seconds under load (53 ms each on
the overhead benchmark's gateway), and the tail latency with it.

The collector runs with ``DEBUG_SAVEALL`` while the requests are made, so whatever it finds
unreachable stays in ``gc.garbage``, where the test looks for objects of the gateway's own
modules (the clients' own cycles are not the gateway's business)."""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from switchgear.config import parse_config
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator

from servers import gateway

ADMIN = "sg-cycles-admin-0123456789abcdef0123456789"
HELLO = "Say hello to the gateway; mail me at ada@example.com."
#: Requests each case makes while the collector keeps what it finds.
REPEATS = 20
#: Modules whose objects must never be left in a cycle: the gateway's, and the HTTP parser it
#: gives each upstream connection.
OWN_MODULES = ("switchgear.", "httptools.")


@pytest.fixture
def root(simulators: Callable[..., RunningSimulator], refused_url: Callable[..., str],
         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A gateway requiring keys, with guards and the cache on: ``sim`` over a real simulator,
    ``falls-back`` on a deployment that refuses connections (tried by every request) with
    ``sim`` as its fallback, ``failing`` on one that answers 500, ``cut`` on one that cuts
    every stream after its first chunk."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.chdir(tmp_path)
    sim = simulators()
    failing = simulators(faults=Faults(error_rate=1.0))
    cut = simulators(faults=Faults(disconnect_rate=1.0))
    config = parse_config({
        "models": {
            "sim": {"deployments": [{"name": "sim", "backend": "openai_http",
                                     "url": sim.base_url, "model": "sim"}]},
            "falls-back": {"deployments": [{"name": "dead", "backend": "openai_http",
                                            "url": refused_url() + "/v1", "model": "sim"}],
                           "fallbacks": ["sim"]},
            "failing": {"deployments": [{"name": "failing", "backend": "openai_http",
                                         "url": failing.base_url, "model": "sim"}]},
            "cut": {"deployments": [{"name": "cut", "backend": "openai_http",
                                     "url": cut.base_url, "model": "sim"}]}},
        "store": {"url": f"sqlite:///{tmp_path}/records.db", "flush_interval_ms": 20},
        "auth": {"mode": "required"},
        # every request tries the dead deployment first: never ejected, retries never rationed
        "routing": {"health_check_interval_s": None,
                    "outlier": {"consecutive_failures": 1_000_000, "min_requests": 1_000_000},
                    "retry": {"budget_min_per_second": 1_000}},
        "guards": {"input": [{"check": "pii", "action": "redact"}],
                   "output": [{"check": "pii", "action": "redact"}]}})
    with gateway(config) as base_url:
        yield base_url.removesuffix("/v1")


def _cases(root: str) -> dict[str, Callable[[], object]]:
    chat = openai.OpenAI(base_url=root + "/v1", api_key=ADMIN, max_retries=0, timeout=30)
    stranger = openai.OpenAI(base_url=root + "/v1", api_key="sg-nobody", max_retries=0,
                             timeout=30)
    claude = anthropic.Anthropic(base_url=root, api_key=ADMIN, max_retries=0, timeout=30)
    messages = [{"role": "user", "content": HELLO}]

    def refused() -> None:
        with pytest.raises(openai.AuthenticationError):
            stranger.chat.completions.create(model="sim", messages=messages)  # type: ignore

    def invalid() -> None:
        with pytest.raises(openai.BadRequestError):
            chat.responses.create(model="sim", input=[])

    def failed() -> None:
        with pytest.raises(openai.InternalServerError):
            chat.chat.completions.create(model="failing", messages=messages)  # type: ignore

    def cut_off() -> None:
        with pytest.raises(openai.APIError):
            for _ in chat.chat.completions.create(model="cut", messages=messages,  # type: ignore
                                                  max_tokens=64, stream=True):
                pass

    def streamed_chat() -> None:
        for _ in chat.chat.completions.create(model="sim", messages=messages,  # type: ignore
                                              max_tokens=8, stream=True):
            pass

    def streamed_response() -> None:
        for _ in chat.responses.create(model="sim", input=HELLO, max_output_tokens=16,
                                       stream=True):
            pass

    def streamed_message() -> None:
        with claude.messages.stream(model="sim", max_tokens=8,
                                    messages=messages) as stream:  # type: ignore
            stream.get_final_message()

    return {
        "chat": lambda: chat.chat.completions.create(model="sim", messages=messages,  # type: ignore
                                                     max_tokens=8),
        "chat streamed": streamed_chat,
        "cache hit": lambda: chat.chat.completions.create(
            model="sim", messages=messages, max_tokens=8, temperature=0),  # type: ignore
        "fallback over a refused connection": lambda: chat.chat.completions.create(
            model="falls-back", messages=messages, max_tokens=8),  # type: ignore
        "completion": lambda: chat.completions.create(model="sim", prompt=HELLO, max_tokens=8),
        "embedding": lambda: chat.embeddings.create(model="sim", input=HELLO),
        "response": lambda: chat.responses.create(model="sim", input=HELLO,
                                                  max_output_tokens=16),
        "response streamed": streamed_response,
        "message": lambda: claude.messages.create(model="sim", max_tokens=8,
                                                  messages=messages),  # type: ignore
        "message streamed": streamed_message,
        "tokens counted": lambda: claude.messages.count_tokens(model="sim",
                                                               messages=messages),  # type: ignore
        "upstream failing, retried": failed,
        "stream cut by the upstream": cut_off,
        "refused key": refused,
        "invalid request": invalid,
    }


def _left_in_cycles(call: Callable[[], object]) -> Counter[str]:
    """The gateway's objects the collector finds unreachable after ``REPEATS`` calls."""
    call()  # connections, caches and lazy imports are made once, not per request
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(REPEATS):
            call()
        time.sleep(0.2)  # the records and stored responses written after the answers
        gc.collect()
        return Counter(f"{type(found).__module__}.{type(found).__qualname__}"
                       for found in gc.garbage
                       if type(found).__module__.startswith(OWN_MODULES))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_no_request_leaves_a_reference_cycle(root: str) -> None:
    left = {name: _left_in_cycles(call) for name, call in _cases(root).items()}
    assert {name: dict(found) for name, found in left.items() if found} == {}
