"""Anthropic's Messages API, translated to and from the OpenAI chat shape.

A Messages request becomes an OpenAI chat body (``chat_request``), a chat completion becomes a
Message (``message``), a stream of chat chunks becomes Anthropic's event sequence
(``MessageEvents``), and an error becomes Anthropic's error shape (``error_status_and_body``).

What does not map: ``top_k`` (OpenAI has no such parameter; it is dropped), ``thinking`` and
other fields Switchgear does not act on (ignored, as the model server could not honour them),
and thinking blocks in the history (dropped: they are the model's own notes). Server tools and
block types without an OpenAI counterpart are refused (400).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from switchgear.errors import (
    BodyTooLarge,
    InvalidRequest,
    Overloaded,
    SwitchgearError,
    UpstreamProtocolError,
)

Body = dict[str, Any]

#: OpenAI's finish_reason → Anthropic's stop_reason ("stop" becomes "stop_sequence" when the
#: model server says which of the request's stop sequences it met).
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: Anthropic's stop_reason → OpenAI's finish_reason (for an Anthropic model server's answers).
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: Anthropic's error type for each HTTP status it uses (any other 4xx is an
#: invalid_request_error, any other 5xx an api_error).
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
#: The status Anthropic answers when it sheds load (its SDKs retry it, with backoff).
OVERLOADED_STATUS = 529
#: tool_choice types → OpenAI's tool_choice (a named tool is an object, made apart).
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
#: Image media types Anthropic accepts in a base64 source.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: Blocks of the history the model wrote for itself, not for the conversation: dropped.
DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
#: Characters per token in the estimate used where no tokenizer is at hand.
CHARS_PER_TOKEN = 4


def _fail(message: str) -> InvalidRequest:
    return InvalidRequest(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{where}: Input should be a valid string")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(f"{where}: Input should be an object")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(f"{where}: Input should be a valid list")
    return value


def _block_type(block: Any, where: str) -> str:
    return _text(_object(block, where).get("type"), f"{where}.type")


def chat_request(body: Any, *, counting: bool = False) -> Body:
    """The OpenAI chat body for a Messages request ``body``; InvalidRequest for a bad one.

    ``counting``: the body of ``/v1/messages/count_tokens``, which has no ``max_tokens``."""
    request = _object(body, "body")
    model = request.get("model")
    if model is None:
        raise _fail("model: Field required")
    if not isinstance(model, str) or not model:
        raise _fail("model: Input should be a non-empty string")
    chat: Body = {"model": model, "messages": [*_system(request.get("system")),
                                               *_messages(request.get("messages"))]}
    if not counting:
        max_tokens = request.get("max_tokens")
        if max_tokens is None:
            raise _fail("max_tokens: Field required")
        if not _is_int(max_tokens) or max_tokens < 1:
            raise _fail("max_tokens: Input should be a positive integer")
        chat["max_tokens"] = max_tokens
        _sampling(request, chat)
    tools = request.get("tools")
    if tools is not None:
        chat["tools"] = [_tool(tool, f"tools.{index}")
                         for index, tool in enumerate(_array(tools, "tools"))]
    choice = request.get("tool_choice")
    if choice is not None:
        chat.update(_tool_choice(choice))
    return chat


def _sampling(request: Body, chat: Body) -> None:
    """Copy the sampling fields that OpenAI shares, checked as Anthropic checks them."""
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = request.get(name)
        if value is None:
            continue
        if not _is_number(value) or not 0 <= value <= high:
            raise _fail(f"{name}: Input should be a number between 0 and {high:g}")
        chat[name] = value
    top_k = request.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _fail("top_k: Input should be a non-negative integer")
    stop = request.get("stop_sequences")
    if stop is not None:
        sequences = _array(stop, "stop_sequences")
        for index, sequence in enumerate(sequences):
            _text(sequence, f"stop_sequences.{index}")
        if sequences:
            chat["stop"] = sequences
    stream = request.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _fail("stream: Input should be a valid boolean")
        chat["stream"] = stream
    metadata = request.get("metadata")
    if metadata is not None:
        user = _object(metadata, "metadata").get("user_id")
        if user is not None:
            chat["user"] = _text(user, "metadata.user_id")


def _system(system: Any) -> list[Body]:
    """The system prompt (a string, or text blocks) as one OpenAI system message."""
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    blocks = _array(system, "system")
    texts = []
    for index, block in enumerate(blocks):
        where = f"system.{index}"
        if _block_type(block, where) != "text":
            raise _fail(f"{where}.type: the system prompt takes text blocks only")
        texts.append(_text(block.get("text"), f"{where}.text"))
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _messages(messages: Any) -> list[Body]:
    if messages is None:
        raise _fail("messages: Field required")
    turns = _array(messages, "messages")
    if not turns:
        raise _fail("messages: at least one message is required")
    chat: list[Body] = []
    for index, turn in enumerate(turns):
        where = f"messages.{index}"
        role = _object(turn, where).get("role")
        if role not in ("user", "assistant"):
            raise _fail(f"{where}.role: Input should be 'user' or 'assistant'")
        content = turn.get("content")
        if content is None:
            raise _fail(f"{where}.content: Field required")
        if isinstance(content, str):
            chat.append({"role": role, "content": content})
            continue
        blocks = _array(content, f"{where}.content")
        if not blocks:
            raise _fail(f"{where}.content: at least one content block is required")
        if role == "user":
            chat.extend(_user_turn(blocks, f"{where}.content"))
        else:
            chat.append(_assistant_turn(blocks, f"{where}.content"))
    return chat


def _user_turn(blocks: list[Any], where: str) -> list[Body]:
    """A user turn: its tool results as OpenAI tool messages (they must follow the assistant's
    tool calls), then the rest as one user message (with the images of the tool results: a
    tool message holds text only)."""
    results: list[Body] = []
    parts: list[Body] = []
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        kind = _block_type(block, at)
        if kind == "tool_result":
            results.append(_tool_result(block, at, parts))
        elif kind in ("text", "image"):
            parts.append(_part(block, at))
        elif kind not in DROPPED_BLOCKS:
            raise _fail(f"{at}.type: '{kind}' blocks are not supported in a user turn")
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _assistant_turn(blocks: list[Any], where: str) -> Body:
    """An assistant turn: its text, and its tool_use blocks as OpenAI tool calls."""
    texts: list[str] = []
    calls: list[Body] = []
    for index, block in enumerate(blocks):
        at = f"{where}.{index}"
        kind = _block_type(block, at)
        if kind == "text":
            texts.append(_text(block.get("text"), f"{at}.text"))
        elif kind == "tool_use":
            arguments = _object(block.get("input"), f"{at}.input")
            calls.append({"id": _text(block.get("id"), f"{at}.id"), "type": "function",
                          "function": {"name": _text(block.get("name"), f"{at}.name"),
                                       "arguments": orjson.dumps(arguments).decode()}})
        elif kind not in DROPPED_BLOCKS:
            raise _fail(f"{at}.type: '{kind}' blocks are not supported in an assistant turn")
    message: Body = {"role": "assistant", "content": "".join(texts) if texts or not calls
                     else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _part(block: Body, where: str) -> Body:
    """A text or image block as an OpenAI content part."""
    if block["type"] == "text":
        return {"type": "text", "text": _text(block.get("text"), f"{where}.text")}
    source = _object(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media = _text(source.get("media_type"), f"{where}.source.media_type")
        if media not in IMAGE_TYPES:
            raise _fail(f"{where}.source.media_type: Input should be one of "
                        f"{', '.join(sorted(IMAGE_TYPES))}")
        url = f"data:{media};base64,{_text(source.get('data'), f'{where}.source.data')}"
    elif kind == "url":
        url = _text(source.get("url"), f"{where}.source.url")
    else:
        raise _fail(f"{where}.source.type: Input should be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: Body, where: str, images: list[Body]) -> Body:
    """A tool_result block as an OpenAI tool message (its text; an error result says so); its
    images go to ``images``."""
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts = []
        for index, part in enumerate(_array(content, f"{where}.content")):
            at = f"{where}.content.{index}"
            kind = _block_type(part, at)
            if kind == "text":
                texts.append(_text(part.get("text"), f"{at}.text"))
            elif kind == "image":
                images.append(_part(part, at))
            else:
                raise _fail(f"{at}.type: a tool result holds text and image blocks only")
        text = "\n\n".join(texts)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _fail(f"{where}.is_error: Input should be a valid boolean")
    return {"role": "tool", "tool_call_id": _text(block.get("tool_use_id"), f"{where}.tool_use_id"),
            "content": f"Error: {text}" if is_error else text}


def _tool(tool: Any, where: str) -> Body:
    """A client tool as an OpenAI function tool (server tools have no OpenAI counterpart)."""
    kind = _object(tool, where).get("type")
    if kind not in (None, "custom"):
        raise _fail(f"{where}.type: server tools ('{kind}') are not supported")
    function: Body = {"name": _text(tool.get("name"), f"{where}.name"),
                      "parameters": _object(tool.get("input_schema"), f"{where}.input_schema")}
    description = tool.get("description")
    if description is not None:
        function["description"] = _text(description, f"{where}.description")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Body:
    kind = _object(choice, "tool_choice").get("type")
    chat: Body = {}
    if kind == "tool":
        chat["tool_choice"] = {"type": "function",
                               "function": {"name": _text(choice.get("name"), "tool_choice.name")}}
    elif isinstance(kind, str) and kind in TOOL_CHOICES:
        chat["tool_choice"] = TOOL_CHOICES[kind]
    else:
        raise _fail("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    serial = choice.get("disable_parallel_tool_use")
    if serial is not None:
        if not isinstance(serial, bool):
            raise _fail("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
        if serial and kind != "none":
            chat["parallel_tool_calls"] = False
    return chat


def estimate_tokens(chat: Body) -> int:
    """A stated estimate of the prompt tokens of an OpenAI chat body, where no tokenizer is at
    hand: one per ``CHARS_PER_TOKEN`` characters of its messages and tools, as JSON."""
    size = len(orjson.dumps([chat.get("messages"), chat.get("tools")]))
    return max(1, -(-size // CHARS_PER_TOKEN))


def usage(openai: Any) -> Body:
    """Anthropic's usage for an OpenAI ``usage`` object. Anthropic's input_tokens leaves out
    the tokens read from (and written to) the prompt cache, which OpenAI's prompt_tokens holds."""
    openai = openai if isinstance(openai, dict) else {}
    details = openai.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = _count(details.get("cached_tokens"))
    written = _count(details.get("cache_write_tokens"))
    return {"input_tokens": max(0, _count(openai.get("prompt_tokens")) - cached - written),
            "output_tokens": _count(openai.get("completion_tokens")),
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written}


def _count(value: Any) -> int:
    return value if _is_int(value) and value > 0 else 0


def stop_reason(finish_reason: Any, matched: Any, stop: Any) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for an OpenAI finish; ``matched`` is the stop
    string the model server met (vLLM's ``stop_reason``), ``stop`` the request's sequences."""
    if finish_reason == "stop" and isinstance(matched, str) and isinstance(stop, list) \
            and matched in stop:
        return "stop_sequence", matched
    reason = STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) \
        else "end_turn"
    return reason, None


def message_id(openai_id: Any) -> str:
    """A Message id (``msg_...``) for the OpenAI response ``openai_id``."""
    if not isinstance(openai_id, str) or not openai_id:
        return f"msg_{uuid.uuid4().hex}"
    if openai_id.startswith("msg_"):
        return openai_id
    return f"msg_{openai_id.removeprefix('chatcmpl-')}"


def message(reply: Body, model: str, stop: Any) -> Body:
    """The Message for a whole OpenAI chat completion ``reply`` to a request for ``model``
    with stop sequences ``stop``."""
    choices = reply.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    said = choice.get("message") or {}
    content: list[Body] = []
    text = said.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = said.get("tool_calls") or []
    for call in calls:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _tool_use_id(),
                        "name": function.get("name") or "",
                        "input": tool_input(function.get("arguments"))})
    finish = "tool_calls" if calls else choice.get("finish_reason")
    reason, sequence = stop_reason(finish, choice.get("stop_reason"), stop)
    return {"id": message_id(reply.get("id")), "type": "message", "role": "assistant",
            "model": reply.get("model") or model, "content": content, "stop_reason": reason,
            "stop_sequence": sequence, "usage": usage(reply.get("usage"))}


def tool_input(arguments: Any) -> Body:
    """A tool call's arguments (a JSON string) as a tool_use block's input object."""
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str | bytes) else arguments
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("The model's tool call arguments are not a JSON object.")
    return value


def _tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


class MessageEvents:
    """Anthropic's event sequence for one stream of OpenAI chat chunks.

    ``chunk`` gives the events a chunk makes (the first also opens the message and pings),
    ``end`` closes the open block and the message (its stop reason and usage), ``fail`` the
    error event a failure after the first byte makes. Each event is a dict whose ``type`` is
    the event's name.
    """

    __slots__ = ("block", "blocks", "finish", "matched", "model", "started", "stop", "tools",
                 "usage")

    def __init__(self, model: str, stop: Any) -> None:
        self.model = model
        self.stop = stop
        self.started = False
        #: The index of the open content block (-1: none), and how many were opened.
        self.block = -1
        self.blocks = 0
        #: OpenAI tool call index → content block index.
        self.tools: dict[int, int] = {}
        self.finish: Any = None
        self.matched: Any = None
        self.usage: Any = None

    def chunk(self, chunk: Body) -> Iterator[Body]:
        """The events for one chat chunk."""
        if not self.started:
            self.started = True
            yield {"type": "message_start", "message": {
                "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
                "model": chunk.get("model") or self.model, "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": usage(None)}}
            yield {"type": "ping"}
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                yield from self._text(text)
            for call in delta.get("tool_calls") or ():
                yield from self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")

    def _text(self, text: str) -> Iterator[Body]:
        if self.block < 0 or self.block in self.tools.values():
            yield from self._open({"type": "text", "text": ""})
        yield {"type": "content_block_delta", "index": self.block,
               "delta": {"type": "text_delta", "text": text}}

    def _tool_call(self, call: Body) -> Iterator[Body]:
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self.tools:
            yield from self._open({"type": "tool_use", "id": call.get("id") or _tool_use_id(),
                                   "name": function.get("name") or "", "input": {}})
            self.tools[position] = self.block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            yield {"type": "content_block_delta", "index": self.tools[position],
                   "delta": {"type": "input_json_delta", "partial_json": arguments}}

    def _open(self, block: Body) -> Iterator[Body]:
        yield from self._close()
        self.block = self.blocks
        self.blocks += 1
        yield {"type": "content_block_start", "index": self.block, "content_block": block}

    def _close(self) -> Iterator[Body]:
        if self.block >= 0:
            yield {"type": "content_block_stop", "index": self.block}
            self.block = -1

    def end(self) -> Iterator[Body]:
        """The events that close the message: block stop, message_delta, message_stop."""
        if not self.started:  # a stream with no chunk at all still is a whole message
            yield from self.chunk({})
        yield from self._close()
        finish = "tool_calls" if self.tools else self.finish
        reason, sequence = stop_reason(finish, self.matched, self.stop)
        yield {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
               "usage": usage(self.usage)}
        yield {"type": "message_stop"}

    @staticmethod
    def fail(error: SwitchgearError) -> Body:
        """The error event for ``error``."""
        return error_body(error)[1]


def error_status_and_body(error: SwitchgearError, request_id: str) -> tuple[int, Body]:
    """``error`` as Anthropic answers it: its status and ``{"type": "error", "error": {type,
    message}, "request_id"}``."""
    status, body = error_body(error)
    body["request_id"] = request_id
    return status, body


def error_body(error: SwitchgearError) -> tuple[int, Body]:
    """Anthropic's status and error body for ``error`` (without a request id)."""
    status = OVERLOADED_STATUS if isinstance(error, Overloaded) else error.status
    if isinstance(error, BodyTooLarge):
        kind = "request_too_large"
    else:
        kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500
                                           else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}
