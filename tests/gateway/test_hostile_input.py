"""Hostile input over real HTTP: wrong JSON types and deep nesting are 400s in OpenAI's shape,
a key is checked before the body is read, and every failure leaves in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3

from switchgear.config import Config
from switchgear.gateway.http import MAX_JSON_DEPTH

from servers import POSTGRES_URL, BackgroundLoop, drop_schema, free_port, gateway

ADMIN = "sg-test-admin-secret-0123456789abcdef"
SIM = {"deployments": [{"name": "s1", "backend": "simulated",
                        "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}
CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def call(base_url: str, method: str, path: str, body: bytes | None = None,
         token: str | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request; status, the body (parsed when JSON, else the raw text) and headers."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = urllib3.request(method, base_url.removesuffix("/v1") + path, body=body,
                               headers=headers, retries=False, timeout=10)
    try:
        answer = json.loads(response.data)
    except ValueError:
        answer = response.data.decode("latin-1")
    return response.status, answer, dict(response.headers)


def assert_openai_error(answer: Any, kind: str = "invalid_request_error") -> None:
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == kind and answer["error"]["message"]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
def open_url(make_config: Callable[..., Config]) -> Iterator[str]:
    with gateway(make_config({"sim": SIM})) as url:
        yield url


@pytest.fixture
def secured(make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[str]:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"sim": SIM})) as url:
        yield url


ODD = [[], ["user"], {}, {"a": 1}, 1, 1.5, True]

FIELD_CASES: list[tuple[dict[str, Any], str]] = [
    *(({**CHAT, "messages": [{"role": odd, "content": "hi"}]}, "messages[0].role")
      for odd in ODD),
    *(({**CHAT, "messages": [{"role": "user", "content": odd}]}, "messages[0].content")
      for odd in ({}, 1, True, [1], ["text"], [{"type": []}], [{"type": "text", "text": []}],
                  [{"type": "text", "text": {}}], [{"text": "x"}])),
    *(({**CHAT, "messages": [{"role": "user", "content": "hi", "name": odd}]},
       "messages[0].name") for odd in ([], {}, 1)),
    *(({**CHAT, "model": odd}, "model") for odd in ([], {}, ["sim"])),
    *(({**CHAT, "stop": odd}, "stop") for odd in ({}, [[]], [{}], 1)),
    *(({**CHAT, "stream_options": odd, "stream": True}, "stream_options") for odd in ([], 1)),
    ({**CHAT, "stream_options": {"include_usage": []}, "stream": True},
     "stream_options.include_usage"),
    *(({**CHAT, "user": odd}, "user") for odd in ([], {})),
    *(({**CHAT, "prompt": odd}, "prompt") for odd in ([], "x", 1)),
    *(({**CHAT, "temperature": odd}, "temperature") for odd in ([], {}, "1")),
    *(({**CHAT, "n": odd}, "n") for odd in ([], {})),
    *(({"model": "sim", "prompt": odd}, "prompt")
      for odd in ({}, [[]], [{}], [1, "a"], [[1], "a"], 1)),
    *(({"model": "sim", "input": odd}, "input") for odd in ({}, [[]], [{}], 1)),
    *(({"model": "sim", "input": "x", "encoding_format": odd}, "encoding_format")
      for odd in ([], {})),
]


def _path(body: dict[str, Any]) -> str:
    if "input" in body:
        return "/v1/embeddings"
    return "/v1/completions" if "messages" not in body else "/v1/chat/completions"


@pytest.mark.parametrize(("body", "param"), FIELD_CASES)
def test_a_field_of_an_unexpected_json_type_is_400(open_url: str, body: dict[str, Any],
                                                   param: str) -> None:
    status, answer, _ = call(open_url, "POST", _path(body), json.dumps(body).encode())
    assert status == 400, answer
    assert_openai_error(answer)
    assert answer["error"]["param"] == param


@pytest.mark.parametrize("depth", [254, 255, 300, 600, 1024, 1025, 5000])
def test_deeply_nested_json_is_400(open_url: str, depth: int) -> None:
    for raw in (nested(depth),
                json.dumps({**CHAT, "metadata": None}).encode()[:-1]
                + b', "extra": ' + nested(depth) + b"}",
                json.dumps(CHAT).encode()[:-1] + b', "tools": ' + nested(depth) + b"}"):
        status, answer, _ = call(open_url, "POST", "/v1/chat/completions", raw)
        assert status == 400, (depth, answer)
        assert_openai_error(answer)
    status, _, _ = call(open_url, "POST", "/v1/chat/completions", json.dumps(CHAT).encode())
    assert status == 200  # still serving


def test_the_depth_limit_is_exact(open_url: str) -> None:
    for depth, expected in ((MAX_JSON_DEPTH, 200), (MAX_JSON_DEPTH + 1, 400)):
        # the body itself is one level; "metadata" holds the rest
        raw = json.dumps(CHAT).encode()[:-1] + b', "metadata": ' + nested(depth - 1) + b"}"
        status, answer, _ = call(open_url, "POST", "/v1/chat/completions", raw)
        assert status == expected, (depth, answer)


@pytest.mark.parametrize("token", [None, "sg-not-a-real-key-at-all-00000000", "nonsense"])
@pytest.mark.parametrize("raw", [b"{not json", nested(600),
                                 json.dumps({**CHAT, "messages": [{"role": ["user"]}]}).encode(),
                                 json.dumps({"model": "no-such-model", "messages": []}).encode()])
def test_without_a_good_key_the_body_is_never_looked_at(secured: str, token: str | None,
                                                        raw: bytes) -> None:
    status, answer, _ = call(secured, "POST", "/v1/chat/completions", raw, token)
    assert status == 401, answer
    assert answer["error"]["code"] == "invalid_api_key"
    assert_openai_error(answer)


def test_with_a_good_key_bad_bodies_are_400(secured: str) -> None:
    for raw in (b"{not json", nested(600),
                json.dumps({**CHAT, "messages": [{"role": ["user"]}]}).encode()):
        status, answer, _ = call(secured, "POST", "/v1/chat/completions", raw, ADMIN)
        assert status == 400, answer
        assert_openai_error(answer)
    status, answer, _ = call(secured, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(),
                             ADMIN)
    assert status == 200, answer


def test_numbers_in_queries_are_ascii_digits_or_400(secured: str) -> None:
    # str.isdigit() accepts '²', which int() refuses: the fuzz found this as a 500.
    for path in ("/admin/records?limit=%C2%B2", "/admin/audit?limit=%C2%B3",
                 "/admin/audit?before=%C2%B2", "/admin/config/diff?from=%C2%B2"):
        status, answer, _ = call(secured, "GET", path, token=ADMIN)
        assert status == 400, (path, answer)
        assert_openai_error(answer)


def test_models_needs_a_key_when_keys_are_required(secured: str) -> None:
    for token in (None, "sg-not-a-real-key-at-all-00000000"):
        status, answer, _ = call(secured, "GET", "/v1/models", token=token)
        assert status == 401, answer
        assert_openai_error(answer)
    status, answer, _ = call(secured, "GET", "/v1/models", token=ADMIN)
    assert status == 200 and [m["id"] for m in answer["data"]] == ["sim"]


def test_models_needs_no_key_in_open_mode(open_url: str) -> None:
    status, answer, _ = call(open_url, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in answer["data"]] == ["sim"]


def test_a_scoped_key_lists_only_its_models(make_config: Callable[..., Config],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"sim": SIM, "other": SIM})) as url:
        status, made, _ = call(url, "POST", "/admin/keys", json.dumps(
            {"tenant": "acme", "name": "scoped", "scopes": ["other"]}).encode(), ADMIN)
        assert status == 201, made
        status, answer, _ = call(url, "GET", "/v1/models", token=made["secret"])
        assert status == 200 and [m["id"] for m in answer["data"]] == ["other"]


class Outage:
    """A TCP proxy to PostgreSQL that can be cut: a real outage of the store, on demand."""

    def __init__(self, loop: BackgroundLoop) -> None:
        self.loop = loop
        self.port = free_port()
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        upstream = urlsplit(POSTGRES_URL)
        self.target = (upstream.hostname or "127.0.0.1", upstream.port or 5432)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.transport.abort()

    def url(self, schema: str) -> str:
        parts = urlsplit(POSTGRES_URL)
        netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{self.port}"
        return parts._replace(netloc=netloc, query=f"schema={schema}").geturl()


@pytest.fixture
def store_down(make_config: Callable[..., Config]) -> Iterator[str]:
    """A gateway (open mode) on PostgreSQL whose database goes away once it has started."""
    loop = BackgroundLoop()
    outage = Outage(loop)
    loop.run(outage.start())
    schema = f"sg_test_{threading.get_ident()}_{outage.port}"
    try:
        with gateway(make_config({"sim": SIM}, store_url=outage.url(schema))) as url:
            loop.run(outage.cut())
            yield url
    finally:
        loop.close()
        asyncio.run(drop_schema(schema))


@pytest.mark.parametrize("path", ["/admin/records", "/admin/latency", "/admin/cost",
                                  "/admin/audit", "/admin/config/history"])
def test_a_store_outage_is_503_with_retry_after_in_openai_shape(store_down: str,
                                                                path: str) -> None:
    status, answer, headers = call(store_down, "GET", path)
    assert status == 503, answer
    assert_openai_error(answer, "api_error")
    assert int(headers["retry-after"]) >= 1
    assert headers["x-request-id"].startswith("req_")


def test_an_unexpected_failure_is_a_500_in_openai_shape(open_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from switchgear.telemetry.metrics import GatewayMetrics

    def broken(self: GatewayMetrics) -> bytes:
        raise RuntimeError("secret detail sg-abcdefgh")

    monkeypatch.setattr(GatewayMetrics, "render", broken)  # a fault no real input can cause
    status, answer, headers = call(open_url, "GET", "/metrics")
    assert status == 500, answer
    assert_openai_error(answer, "api_error")
    assert "secret" not in json.dumps(answer)
    assert headers["x-request-id"].startswith("req_")
    status, _, _ = call(open_url, "POST", "/v1/chat/completions", json.dumps(CHAT).encode())
    assert status == 200
