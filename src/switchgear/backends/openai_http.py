"""The openai_http backend: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, hosted APIs).

Connections are pooled and kept alive; a stream is passed on chunk by chunk as it arrives.
aiohttp's errors are mapped to switchgear.errors here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from switchgear.backends.base import Body
from switchgear.config import DeploymentConfig
from switchgear.errors import (
    SwitchgearError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from switchgear.exchange import Operation

PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.COMPLETIONS: "/completions",
    Operation.EMBEDDINGS: "/embeddings",
}
DONE = b"[DONE]"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def map_client_error(error: BaseException, name: str) -> SwitchgearError:
    """The gateway error for an aiohttp (or timeout) failure talking to deployment ``name``."""
    if isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"Deployment '{name}' did not answer in time.")
    if isinstance(error, aiohttp.ClientConnectorError):
        return UpstreamConnectError(f"Deployment '{name}' is unreachable.")
    return UpstreamProtocolError(f"Deployment '{name}' broke the connection: "
                                 f"{type(error).__name__}.")


class OpenAIHTTPBackend:
    """Talks to one OpenAI-compatible base URL (ending in /v1) over a keep-alive pool."""

    def __init__(self, config: DeploymentConfig) -> None:
        assert config.url is not None
        self.name = config.name
        self._base = config.url
        self._limit = config.max_concurrency
        self._timeout = aiohttp.ClientTimeout(total=config.timeouts.total,
                                              sock_connect=config.timeouts.connect)
        self._headers = {"Content-Type": "application/json"}
        api_key = config.api_key()
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=60,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers,
            json_serialize=lambda obj: orjson.dumps(obj).decode(), auto_decompress=True,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (``start`` must have run)."""
        assert self._session is not None, "backend not started"
        return self._session

    async def complete(self, operation: Operation, body: Body) -> Body:
        """POST the request and return the parsed JSON answer."""
        try:
            async with self.session.post(self._base + PATHS[operation],
                                         data=orjson.dumps(body)) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise self._status_error(response.status, raw, response.headers)
        except SwitchgearError:
            raise
        except (TimeoutError, aiohttp.ClientError) as error:
            raise map_client_error(error, self.name) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"Deployment '{self.name}' sent a body that is "
                                        "not JSON.") from None
        if not isinstance(answer, dict):
            raise UpstreamProtocolError(f"Deployment '{self.name}' sent a non-object body.")
        return answer

    async def stream(self, operation: Operation, body: Body) -> AsyncIterator[Body]:
        """POST the request and yield each server-sent event's JSON until ``[DONE]``."""
        try:
            async with self.session.post(self._base + PATHS[operation],
                                         data=orjson.dumps(body)) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise self._status_error(response.status, raw, response.headers)
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == DONE:
                        return
                    chunk = self._chunk(data)
                    if "error" in chunk:
                        raise self._event_error(chunk)
                    yield chunk
        except SwitchgearError:
            raise
        except (TimeoutError, aiohttp.ClientError) as error:
            raise map_client_error(error, self.name) from None
        raise UpstreamProtocolError(f"Deployment '{self.name}' ended the stream without [DONE].")

    def _chunk(self, data: bytes) -> Body:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"Deployment '{self.name}' sent an event that is "
                                        "not JSON.") from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(f"Deployment '{self.name}' sent a non-object event.")
        return chunk

    def _event_error(self, chunk: Body) -> UpstreamError:
        error = chunk.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return UpstreamProtocolError(f"Deployment '{self.name}' failed mid-stream: {message}")

    def _status_error(self, status: int, raw: bytes, headers: Any) -> UpstreamStatusError:
        message, kind, param, code = f"Deployment '{self.name}' answered {status}.", None, None, None
        try:
            error = orjson.loads(raw).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                kind, param, code = error.get("type"), error.get("param"), error.get("code")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        if status in (401, 403):  # the gateway's own credentials were refused: not the client's fault
            message, status, kind = f"Deployment '{self.name}' refused the gateway's credentials.", 502, None
        return UpstreamStatusError(message, status=status, upstream_type=kind, param=param,
                                   code=code, retry_after=_retry_after(headers))

    async def check(self) -> None:
        """GET /models: raise an UpstreamError unless the server answers 200."""
        try:
            async with self.session.get(self._base + "/models",
                                        timeout=aiohttp.ClientTimeout(total=2)) as response:
                await response.read()
                if response.status != 200:
                    raise UpstreamStatusError(f"Deployment '{self.name}' health check answered "
                                              f"{response.status}.", status=503)
        except SwitchgearError:
            raise
        except (TimeoutError, aiohttp.ClientError) as error:
            raise map_client_error(error, self.name) from None

    async def aclose(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None
