"""OpenAI-shaped response bodies: completions, their stream chunks, embeddings, model lists."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Sequence
from typing import Any

from switchgear.exchange import Operation

Body = dict[str, Any]

OWNER = "switchgear-sim"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Body:
    """The ``usage`` object of a response (with ``prompt_tokens_details`` when some prompt
    tokens came from a prompt cache)."""
    body: Body = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return body


class CompletionShape:
    """The bodies of one completion response, whole or as stream chunks.

    Chat and text completions differ only in object names and the choice layout; subclasses say
    how, this class puts the envelope around them.
    """

    whole_object = ""
    chunk_object = ""
    id_prefix = ""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def whole(self, text: str, finish_reason: str, tokens: Body) -> Body:
        """The complete, non-streamed response with its usage."""
        body = self._envelope(self.whole_object, [self.whole_choice(text, finish_reason)])
        body["usage"] = tokens
        return body

    def opening(self) -> Body | None:
        """The chunk a stream starts with before any text, if the shape has one."""
        return None

    def piece(self, text: str) -> Body:
        """A stream chunk carrying ``text``."""
        return self._envelope(self.chunk_object, [self.chunk_choice(text, None)])

    def closing(self, finish_reason: str) -> Body:
        """The stream chunk that says why generation stopped."""
        return self._envelope(self.chunk_object, [self.chunk_choice("", finish_reason)])

    def usage_chunk(self, tokens: Body) -> Body:
        """The last stream chunk, when usage was asked for: no choices, only usage."""
        body = self._envelope(self.chunk_object, [])
        body["usage"] = tokens
        return body

    def whole_choice(self, text: str, finish_reason: str) -> Body:
        """The single choice of a whole response."""
        raise NotImplementedError

    def chunk_choice(self, text: str, finish_reason: str | None) -> Body:
        """The single choice of a stream chunk."""
        raise NotImplementedError

    def _envelope(self, object_name: str, choices: list[Body]) -> Body:
        return {
            "id": self.id,
            "object": object_name,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": OWNER,
            "choices": choices,
        }


class ChatShape(CompletionShape):
    """``chat.completion`` and ``chat.completion.chunk`` bodies."""

    whole_object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def opening(self) -> Body:
        """The first chunk: the assistant role with empty content."""
        return self._envelope(self.chunk_object, [self._delta({"role": "assistant",
                                                               "content": ""}, None)])

    def tool_call(self, call_id: str, name: str, arguments: str, tokens: Body) -> Body:
        """The complete response calling the function ``name`` with ``arguments``."""
        body = self._envelope(self.whole_object, [{
            "index": 0, "logprobs": None, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None,
                        "tool_calls": [_call(call_id, name, arguments)]}}])
        body["usage"] = tokens
        return body

    def tool_call_pieces(self, call_id: str, name: str, arguments: str) -> list[Body]:
        """The stream chunks of a call of ``name``: its start, then its arguments in two
        pieces (as servers stream them)."""
        half = len(arguments) // 2
        return [self._envelope(self.chunk_object, [self._delta({"tool_calls": [
            {"index": 0, **call}]}, None)]) for call in (
            _call(call_id, name, ""),
            {"function": {"arguments": arguments[:half]}},
            {"function": {"arguments": arguments[half:]}})]

    def whole_choice(self, text: str, finish_reason: str) -> Body:
        """An assistant message choice."""
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }

    def chunk_choice(self, text: str, finish_reason: str | None) -> Body:
        """A content delta choice (an empty delta when finishing)."""
        return self._delta({"content": text} if finish_reason is None else {}, finish_reason)

    @staticmethod
    def _delta(delta: Body, finish_reason: str | None) -> Body:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _call(call_id: str, name: str, arguments: str) -> Body:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


class TextShape(CompletionShape):
    """``text_completion`` bodies (the legacy completions endpoint), whole and streamed."""

    whole_object = "text_completion"
    chunk_object = "text_completion"
    id_prefix = "cmpl"

    def whole_choice(self, text: str, finish_reason: str) -> Body:
        """A text choice."""
        return self.chunk_choice(text, finish_reason)

    def chunk_choice(self, text: str, finish_reason: str | None) -> Body:
        """A text choice carrying a piece of text."""
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion_shape(operation: Operation, model: str) -> CompletionShape:
    """The response shape of a chat or text completion."""
    if operation is Operation.CHAT:
        return ChatShape(model)
    return TextShape(model)


def embedding_list(
    model: str, vectors: Sequence[Sequence[float]], encoding_format: str, prompt_tokens: int
) -> Body:
    """The embeddings response: one ``embedding`` object per input, in order."""
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": index,
             "embedding": _encode(vector, encoding_format)}
            for index, vector in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_list(model: str) -> Body:
    """The ``/v1/models`` response listing the one served model."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": OWNER}],
    }


def _encode(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        packed = struct.pack(f"<{len(vector)}f", *vector)
        return base64.b64encode(packed).decode("ascii")
    return list(vector)
