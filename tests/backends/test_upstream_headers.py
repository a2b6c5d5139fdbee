"""Extra headers and query parameters of an HTTP deployment, from the environment: an
Azure-OpenAI-shaped fake upstream over real HTTP records what it receives (the ``api-key``
header, the ``api-version`` query, the deployment path) and answers only when they are right; the
config refuses header names the gateway sets and values that could inject a header, reports
unset variables at start, and governance treats a header secret like an API key."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from aiohttp import web

from switchgear.backends.openai_http import OpenAIHTTPBackend
from switchgear.config import (
    Config,
    ConfigError,
    DeploymentConfig,
    ModelConfig,
    missing_environment,
    parse_config,
)
from switchgear.exchange import Operation
from switchgear.governance.changes import credentialed_upstreams

from servers import BackgroundLoop, aiohttp_server, gateway

AZURE_KEY = "azure-test-key-0123456789"
API_VERSION = "2024-10-21"
DEPLOYMENT_PATH = "/openai/deployments/gpt-4o-prod"
HELLO = [{"role": "user", "content": "Say hello"}]


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``event`` as JSON."""
    return f"data: {json.dumps(event)}\n\n".encode()


@dataclass
class Received:
    """One request as the fake upstream saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class AzureUpstream:
    """Answers chat completions like Azure OpenAI: under the deployment's path, with an
    ``api-key`` header and an ``api-version`` query, else 401 or 404 as Azure does."""

    key: str = AZURE_KEY
    received: list[Received] = field(default_factory=list)

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            body = await request.json() if request.can_read_body else None
            self.received.append(Received(request.method, request.path, dict(request.query),
                                          dict(request.headers), body))
            if request.headers.get("api-key") != self.key:
                return web.json_response({"error": {"code": "401", "message": "Access denied "
                                                    "due to invalid subscription key."}},
                                         status=401)
            if request.query.get("api-version") != API_VERSION:
                return web.json_response({"error": {"code": "404",
                                                    "message": "Resource not found"}}, status=404)
            usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                     "prompt_tokens_details": {"cached_tokens": 4}}
            if not body or not body.get("stream"):
                return web.json_response({
                    "id": "chatcmpl-az", "object": "chat.completion", "created": 1,
                    "model": "gpt-4o-2024-08-06", "usage": usage,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello there"}}]})
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            chunk = {"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1,
                     "model": "gpt-4o-2024-08-06"}
            for delta, finish in (({"role": "assistant", "content": "Hello"}, None),
                                  ({"content": " there"}, "stop")):
                await response.write(sse({**chunk, "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish}]}))
            await response.write(sse({**chunk, "choices": [], "usage": usage}))
            await response.write(b"data: [DONE]\n\n")
            return response

        app = web.Application()
        app.router.add_post(DEPLOYMENT_PATH + "/chat/completions", chat)
        return app


@pytest.fixture
def azure(background: BackgroundLoop) -> Iterator[tuple[str, AzureUpstream]]:
    upstream = AzureUpstream()
    with aiohttp_server(upstream.app(), background) as url:
        yield url + DEPLOYMENT_PATH, upstream


def azure_deployment(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "azure", "backend": "openai_http", "url": url, "model": "gpt-4o",
            "headers_env": {"api-key": "SG_TEST_AZURE_KEY"}, "query": {"api-version": API_VERSION},
            "health_check": "completion", **extra}


def test_an_azure_deployment_sends_its_key_header_and_api_version_and_is_priced(
        azure: tuple[str, AzureUpstream], make_config: Callable[..., Config],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, upstream = azure
    monkeypatch.setenv("SG_TEST_AZURE_KEY", AZURE_KEY)
    config = make_config({"chat": {"deployments": [azure_deployment(url)]}})
    with gateway(config) as base_url, openai.OpenAI(base_url=base_url, api_key="unused",
                                                    max_retries=0, timeout=30) as sdk:
        answer = sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=5)
        assert answer.choices[0].message.content == "Hello there"
        assert answer.usage is not None and answer.usage.prompt_tokens == 9
        chunks = list(sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=5,
                                                  stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
            == "Hello there"
    chats = [seen for seen in upstream.received if seen.body and seen.body["messages"] == HELLO]
    assert len(chats) == 2
    for seen in chats:
        assert seen.path == DEPLOYMENT_PATH + "/chat/completions"
        assert seen.query == {"api-version": API_VERSION}
        assert seen.headers["api-key"] == AZURE_KEY
        assert "Authorization" not in seen.headers  # no api_key_env: no Bearer
        assert seen.body is not None and seen.body["model"] == "gpt-4o"
    # gpt-4o has no price in the config: the built-in table's is charged
    assert config.models["chat"].deployments[0].charged_price.input_per_million == 2.5


def backend_answer(background: BackgroundLoop, config: DeploymentConfig) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        backend = OpenAIHTTPBackend(config)
        await backend.start()
        try:
            return await backend.complete(Operation.CHAT, {"model": "gpt-4o", "messages": HELLO})
        finally:
            await backend.aclose()

    answer: dict[str, Any] = background.run(run())
    return answer


def test_query_values_from_the_environment_are_percent_encoded(
        azure: tuple[str, AzureUpstream], background: BackgroundLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, upstream = azure
    monkeypatch.setenv("SG_TEST_AZURE_KEY", AZURE_KEY)
    monkeypatch.setenv("SG_TEST_SIG", "a b&c=d/é")
    config = DeploymentConfig.model_validate(azure_deployment(
        url, query_env={"sig": "SG_TEST_SIG"}))
    assert backend_answer(background, config)["choices"][0]["message"]["content"]
    assert upstream.received[-1].query == {"api-version": API_VERSION, "sig": "a b&c=d/é"}


def test_a_wrong_key_is_the_gateways_credentials_refused(
        azure: tuple[str, AzureUpstream], background: BackgroundLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = azure
    monkeypatch.setenv("SG_TEST_AZURE_KEY", "wrong")
    with pytest.raises(Exception, match="refused the gateway's credentials") as raised:
        backend_answer(background, DeploymentConfig.model_validate(azure_deployment(url)))
    assert getattr(raised.value, "status", None) == 502


@pytest.mark.parametrize("value", ["key\r\nX-Injected: 1", "key\nHost: evil", "key\x01",
                                   "key\x7f", "ключ"])
def test_a_header_value_that_could_inject_or_not_be_sent_is_refused(
        value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_TEST_AZURE_KEY", value)
    monkeypatch.setenv("SG_TEST_BEARER", value)
    config = DeploymentConfig.model_validate(azure_deployment("http://127.0.0.1:1/v1"))
    with pytest.raises(ConfigError, match=r"SG_TEST_AZURE_KEY \(headers_env\.api-key\) holds") \
            as raised:
        OpenAIHTTPBackend(config)
    assert value not in str(raised.value)
    bearer = DeploymentConfig(name="b", backend="openai_http", url="http://127.0.0.1:1/v1",
                              api_key_env="SG_TEST_BEARER")
    with pytest.raises(ConfigError, match=r"SG_TEST_BEARER \(api_key_env\) holds"):
        OpenAIHTTPBackend(bearer)


def test_a_custom_auth_header_and_a_bearer_key_travel_together(
        background: BackgroundLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM behind a proxy with its own auth header, and Gemini-style Bearer, at once."""
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"object": "chat.completion", "choices": [], "usage": {}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    monkeypatch.setenv("SG_TEST_PROXY_AUTH", "proxy-secret")
    monkeypatch.setenv("SG_TEST_BEARER", "bearer-secret")
    with aiohttp_server(app, background) as url:
        config = DeploymentConfig(name="v", backend="openai_http", url=url + "/v1",
                                  api_key_env="SG_TEST_BEARER",
                                  headers_env={"X-Proxy-Auth": "SG_TEST_PROXY_AUTH"})
        backend_answer(background, config)
    assert seen[0]["X-Proxy-Auth"] == "proxy-secret"
    assert seen[0]["Authorization"] == "Bearer bearer-secret"


@pytest.mark.parametrize(("backend", "name", "extra"), [
    ("openai_http", "Host", {}), ("openai_http", "content-length", {}),
    ("openai_http", "traceparent", {}), ("openai_http", "Transfer-Encoding", {}),
    ("openai_http", "Authorization", {"api_key_env": "SG_TEST_BEARER"}),
    ("anthropic", "x-api-key", {}), ("anthropic", "Anthropic-Version", {}),
])
def test_headers_the_gateway_sets_cannot_be_replaced(backend: str, name: str,
                                                     extra: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=f"headers_env: {name} is a header the gateway sets"):
        parse_config({"models": {"m": {"deployments": [{
            "name": "d", "backend": backend, "url": "http://127.0.0.1:1", "model": "x",
            "headers_env": {name: "SG_TEST_X"}, **extra}]}}})


def test_bad_header_names_and_headers_on_local_backends_are_refused() -> None:
    with pytest.raises(ConfigError, match="is not an HTTP header name"):
        parse_config({"models": {"m": {"deployments": [{
            "name": "d", "backend": "openai_http", "url": "http://127.0.0.1:1/v1",
            "headers_env": {"X-A\r\nB": "SG_TEST_X"}}]}}})
    with pytest.raises(ConfigError, match="headers_env, query and query_env are for HTTP"):
        parse_config({"models": {"m": {"deployments": [{
            "name": "d", "backend": "simulated", "query": {"a": "b"}}]}}})


def test_unset_header_and_query_variables_are_reported_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SG_TEST_AZURE_KEY", raising=False)
    monkeypatch.delenv("SG_TEST_SIG", raising=False)
    config = parse_config({"models": {"chat": {"deployments": [azure_deployment(
        "http://127.0.0.1:1/v1", query_env={"sig": "SG_TEST_SIG"})]}}})
    assert missing_environment(config) == [
        "SG_TEST_AZURE_KEY (models.chat.deployments.0.headers_env.api-key)",
        "SG_TEST_SIG (models.chat.deployments.0.query_env.sig)"]


def test_a_header_variable_may_not_be_the_gateways_own_secret() -> None:
    with pytest.raises(ConfigError, match=r"headers_env\.api-key: SWITCHGEAR_ADMIN_KEY is one "
                                          r"of the gateway's own secrets"):
        parse_config({"models": {"chat": {"deployments": [{
            **azure_deployment("http://127.0.0.1:1/v1"),
            "headers_env": {"api-key": "SWITCHGEAR_ADMIN_KEY"}}]}}})


def models_with(*deployments: dict[str, Any]) -> dict[str, ModelConfig]:
    return {"chat": ModelConfig.model_validate({"deployments": list(deployments)})}


def test_a_header_or_query_secret_sent_to_a_new_url_needs_approval() -> None:
    before = models_with(azure_deployment("http://127.0.0.1:1/openai/deployments/a"))
    assert credentialed_upstreams(before, before) == []
    moved = models_with(azure_deployment("http://evil.example/openai/deployments/a"))
    assert credentialed_upstreams(before, moved) == ["chat/azure"]
    query_secret = models_with(azure_deployment("http://127.0.0.1:1/openai/deployments/a",
                                                query_env={"sig": "SG_TEST_SIG"}))
    assert credentialed_upstreams(before, query_secret) == ["chat/azure"]
    plain = models_with({"name": "p", "backend": "openai_http", "url": "http://evil.example/v1",
                         "query": {"api-version": API_VERSION}})
    assert credentialed_upstreams(before, plain) == []


def test_the_config_keeps_no_secret_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only variable names sit in the config; the value is read when the backend is built."""
    monkeypatch.setenv("SG_TEST_AZURE_KEY", AZURE_KEY)
    config = parse_config({"models": {"chat": {"deployments": [
        azure_deployment("http://127.0.0.1:1/v1")]}}})
    assert AZURE_KEY not in str(config.model_dump())
