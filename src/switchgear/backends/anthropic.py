"""The anthropic backend: Anthropic's Messages API (``{url}/v1/messages``) behind the OpenAI shapes
the pipeline speaks.

The request carries the deployment's key in ``x-api-key`` (``api_key_env``) and the
``anthropic-version`` it is configured with; the chat body is translated to a Messages body and
the answer back (protocols/anthropic_upstream.py), usage mapped exactly with the prompt cache's
reads and writes. The connection pool, deadlines, error mapping and health check (``GET
/v1/models``) are the openai_http backend's (``HTTPBackend``); an overloaded answer (529) is a
retryable 503; ``health_check: completion`` asks for one token instead. Only chat is served:
completions and embeddings are a 400.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson

from switchgear.backends.base import Body
from switchgear.backends.http_client import ClientError
from switchgear.backends.openai_http import HTTPBackend, map_client_error, sse_data
from switchgear.config import DeploymentConfig
from switchgear.errors import InvalidRequest, UpstreamProtocolError
from switchgear.exchange import Operation
from switchgear.protocols.anthropic_upstream import (
    ChunkTranslator,
    chat_completion,
    messages_request,
)

MESSAGES = "/v1/messages"
MODELS = "/v1/models"


class AnthropicBackend(HTTPBackend):
    """Talks to one Anthropic Messages API base URL (``https://api.anthropic.com``)."""

    def __init__(self, config: DeploymentConfig) -> None:
        headers = {"anthropic-version": config.anthropic.version}
        api_key = config.api_key()
        if api_key:
            headers["x-api-key"] = api_key
        check = (("POST", MESSAGES, orjson.dumps({
            "model": config.model, "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}]}))
            if config.health_check == "completion" else ("GET", MODELS, b""))
        super().__init__(config, headers, check)
        self._max_tokens = config.anthropic.max_tokens

    def _messages_body(self, operation: Operation, body: Body) -> bytes:
        if operation is not Operation.CHAT:
            raise InvalidRequest(f"Deployment '{self.name}' is an Anthropic Messages API, which "
                                 f"serves chat completions only, not {operation.value}.",
                                 param="model")
        return orjson.dumps(messages_request(body, self._max_tokens))

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """POST /v1/messages and return the Message as a ``chat.completion``."""
        payload = self._messages_body(operation, {**body, "stream": False})
        response = await self._send("POST", MESSAGES, payload, self._total_timeout)
        raw = await self._read(response)
        if response.status >= 400:
            raise self._status_error(response.status, raw, response.headers)
        return chat_completion(self._json_object(raw, "body"), int(time.time()))

    async def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """POST /v1/messages with ``stream`` and yield its events as ``chat.completion.chunk``
        bodies until ``message_stop``."""
        payload = self._messages_body(operation, {**body, "stream": True})
        options = body.get("stream_options")
        translator = ChunkTranslator(int(time.time()), isinstance(options, dict)
                                     and bool(options.get("include_usage")))
        response = await self._send("POST", MESSAGES, payload, self._total_timeout)
        if response.status >= 400:
            raise self._status_error(response.status, await self._read(response), response.headers)
        try:
            async for data in sse_data(response.iter_chunks()):
                event = self._json_object(data, "event")
                if event.get("type") == "error":
                    error = event.get("error") or {}
                    message = error.get("message") if isinstance(error, dict) else error
                    raise UpstreamProtocolError(f"Deployment '{self.name}' failed mid-stream: "
                                                f"{message}")
                for chunk in translator.chunks(event):
                    yield chunk
                if translator.stopped:
                    return
        except ClientError as error:
            raise map_client_error(error, self.name) from None
        finally:
            response.close()
        raise UpstreamProtocolError(f"Deployment '{self.name}' ended the stream without "
                                    "message_stop.")
