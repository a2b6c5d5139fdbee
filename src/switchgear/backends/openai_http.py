"""The openai_http backend: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, hosted APIs).

Connections are pooled and kept alive; a stream is passed on chunk by chunk as it arrives. The HTTP
client's errors are mapped to switchgear.errors here and nowhere else. Each request carries the
attempt's W3C ``traceparent`` (set by the Route stage), and the deployment's extra headers and
query parameters (``headers_env``, ``query``, ``query_env``). ``HTTPBackend`` is what every HTTP
upstream shares (the pool, deadlines, error mapping, the health check); the anthropic backend
builds on it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import orjson

from switchgear.backends.base import Body
from switchgear.backends.http_client import (
    ClientError,
    ConnectFailed,
    ConnectionClosed,
    ConnectionPool,
    Response,
    ResponseTimeout,
)
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
from switchgear.protocols.anthropic import OVERLOADED_STATUS
from switchgear.telemetry.tracing import OUTGOING_TRACEPARENT

PATHS = {
    Operation.CHAT: "/chat/completions",
    Operation.COMPLETIONS: "/completions",
    Operation.EMBEDDINGS: "/embeddings",
}
DONE = b"[DONE]"
#: Seconds a readiness check may take.
CHECK_TIMEOUT = 2.0


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def map_client_error(error: ClientError, name: str) -> SwitchgearError:
    """The gateway error for an HTTP client failure talking to deployment ``name``."""
    if isinstance(error, ResponseTimeout):
        return UpstreamTimeout(f"Deployment '{name}' did not answer in time.")
    if isinstance(error, ConnectFailed):
        return UpstreamConnectError(f"Deployment '{name}' is unreachable.")
    if isinstance(error, ConnectionClosed) and error.before_response:
        return UpstreamProtocolError(f"Deployment '{name}' closed the connection without answering.")
    return UpstreamProtocolError(f"Deployment '{name}' broke the connection: {error}.")


class SSEData:
    """Reads the ``data:`` payloads of a server-sent-event stream from its raw chunks."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the lines ``chunk`` completes (``b"\\n"`` ends a last open line)."""
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        return [line[5:].strip() for line in complete if line.startswith(b"data:")]


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a server-sent-event stream, given its raw chunks."""
    reader = SSEData()
    async for chunk in chunks:
        for data in reader.feed(chunk):
            yield data
    for data in reader.feed(b"\n"):
        yield data


class HTTPBackend:
    """What an HTTP upstream's backend shares: a keep-alive pool to the deployment's ``url``
    sending its headers (``headers`` here, then the deployment's extra ones) and query, the
    deadlines, the client errors mapped, JSON bodies read, and the health check (``check``:
    method, path and body)."""

    def __init__(self, config: DeploymentConfig, headers: dict[str, str],
                 check: tuple[str, str, bytes]) -> None:
        assert config.url is not None
        self.name = config.name
        self._url = config.url
        self._connect_timeout = config.timeouts.connect
        self._total_timeout = config.timeouts.total
        self._check = check
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         **headers, **config.upstream_headers()}
        query = config.upstream_query()
        self._query = f"?{query}" if query else ""
        self._pool: ConnectionPool | None = None

    async def start(self) -> None:
        """Open the connection pool (connections are made on first use)."""
        self._pool = ConnectionPool(self._url, connect_timeout=self._connect_timeout,
                                    headers=self._headers)

    async def _send(self, method: str, path: str, body: bytes, seconds: float) -> Response:
        """Send ``method path`` (with the deployment's query) and wait for the headers."""
        assert self._pool is not None, "backend not started"
        deadline = asyncio.get_running_loop().time() + seconds
        traceparent = OUTGOING_TRACEPARENT.get()
        headers = b"traceparent: %s\r\n" % traceparent.encode() if traceparent else b""
        try:
            return await self._pool.request(method, path + self._query, body, deadline, headers)
        except ClientError as error:
            raise map_client_error(error, self.name) from None

    async def _read(self, response: Response) -> bytes:
        """The whole body of ``response``, which is closed after."""
        try:
            return await response.read()
        except ClientError as error:
            raise map_client_error(error, self.name) from None
        finally:
            response.close()

    def _json_object(self, data: bytes, what: str) -> Body:
        """``data`` parsed as a JSON object, or an UpstreamProtocolError naming ``what`` it was."""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise self._not_object(what)
        return parsed

    def _not_object(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"Deployment '{self.name}' sent a {what} that is not a "
                                     "JSON object.")

    def _status_error(self, status: int, raw: bytes, headers: Mapping[str, str]
                      ) -> UpstreamStatusError:
        """The error an HTTP error answer becomes: the upstream's ``{"error": {...}}`` message
        and type passed on (OpenAI's shape; Anthropic's has the same ``error`` object), except
        that a refusal of the gateway's own credentials is a 502 and an overload (529, which
        Anthropic sends) a retryable 503."""
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
        if status == OVERLOADED_STATUS:  # Anthropic's own status, which OpenAI's clients do not know
            status = 503
        return UpstreamStatusError(message, status=status, upstream_type=kind, param=param,
                                   code=code, retry_after=_retry_after(headers))

    async def check(self) -> None:
        """The health check's request: raise an UpstreamError unless the server answers 2xx
        (a 404 from a wrong base URL or a proxy is a failure)."""
        method, path, body = self._check
        response = await self._send(method, path, body, CHECK_TIMEOUT)
        await self._read(response)
        if not 200 <= response.status < 300:
            raise UpstreamStatusError(f"Deployment '{self.name}' health check answered "
                                      f"{response.status}.", status=503)

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


class OpenAIHTTPBackend(HTTPBackend):
    """Talks to one OpenAI-compatible base URL (ending in /v1) over a keep-alive pool."""

    def __init__(self, config: DeploymentConfig) -> None:
        check = (("POST", "/chat/completions", orjson.dumps({
            "model": config.model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}]}))
            if config.health_check == "completion" else ("GET", "/models", b""))
        api_key = config.api_key()
        super().__init__(config, {"Authorization": f"Bearer {api_key}"} if api_key else {},
                         check)

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """POST the request and return the parsed JSON answer."""
        response = await self._send("POST", PATHS[operation], orjson.dumps(body), self._total_timeout)
        raw = await self._read(response)
        if response.status >= 400:
            raise self._status_error(response.status, raw, response.headers)
        return self._json_object(raw, "body")

    async def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """POST the request and yield each server-sent event's JSON until ``[DONE]``."""
        response = await self._send("POST", PATHS[operation], orjson.dumps(body), self._total_timeout)
        if response.status >= 400:
            raise self._status_error(response.status, await self._read(response), response.headers)
        reader = SSEData()
        loads, malformed = orjson.loads, orjson.JSONDecodeError
        try:
            async for raw in response.iter_chunks(b"\n"):  # the newline ends a last open line
                for data in reader.feed(raw):
                    if data == DONE:
                        return
                    try:  # _json_object's work, inline: this runs for every event
                        chunk = loads(data)
                    except malformed:
                        chunk = None
                    if type(chunk) is not dict:  # orjson makes plain dicts
                        raise self._not_object("event")
                    if "error" in chunk:
                        raise self._event_error(chunk)
                    yield chunk
        except ClientError as error:
            raise map_client_error(error, self.name) from None
        finally:
            response.close()
        raise UpstreamProtocolError(f"Deployment '{self.name}' ended the stream without [DONE].")

    def _event_error(self, chunk: Body) -> UpstreamError:
        error = chunk.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
        return UpstreamProtocolError(f"Deployment '{self.name}' failed mid-stream: {message}")
