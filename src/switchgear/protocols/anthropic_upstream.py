"""The OpenAI chat shape, translated to an Anthropic upstream's Messages API and its answers back:
the other direction from ``anthropic.py`` (which serves Anthropic's API to clients).

``messages_request`` makes the Messages body for an OpenAI chat body the pipeline hands the
``anthropic`` backend; ``chat_completion`` makes a ``chat.completion`` of a Message;
``ChunkTranslator`` makes ``chat.completion.chunk`` bodies of Anthropic's stream events; and
``chat_usage`` maps usage exactly: OpenAI's prompt_tokens holds the tokens read from and written to
the prompt cache, which Anthropic's input_tokens leaves out.

What does not map is refused (400) rather than dropped where the answer would differ: more than
one choice (``n``), ``logprobs``, a ``response_format`` other than text, audio and file parts.
Sampling hints Anthropic has no counterpart for (penalties, ``seed``) are left out.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from switchgear.errors import InvalidRequest
from switchgear.protocols.anthropic import FINISH_REASONS

Body = dict[str, Any]

#: OpenAI's tool_choice strings → Anthropic's tool_choice types.
TOOL_CHOICE_TYPES = {"auto": "auto", "required": "any", "none": "none"}
#: A base64 data URL of an image part: its media type and data.
DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
#: Request fields with no Anthropic counterpart whose answer would differ if dropped.
REFUSED = ("logprobs", "top_logprobs", "audio", "prediction")


def _refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{message} (an Anthropic deployment cannot serve it).", param=param)


def messages_request(chat: Body, default_max_tokens: int) -> Body:
    """The Messages API body for the OpenAI chat body ``chat`` (its ``model`` already the
    upstream's); ``default_max_tokens`` when it gives neither max_completion_tokens nor
    max_tokens, since Anthropic requires one."""
    for name in REFUSED:
        if chat.get(name):
            raise _refuse(f"'{name}' is not supported", name)
    if (chat.get("n") or 1) != 1:
        raise _refuse("Only one choice (n: 1) is supported", "n")
    response_format = chat.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type", "text") != "text":
        raise _refuse(f"response_format '{response_format.get('type')}' is not supported",
                      "response_format")
    system: list[Body] = []
    messages: list[Body] = []
    for number, message in enumerate(chat.get("messages") or []):
        where = f"messages[{number}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
        elif role == "user":
            _append(messages, "user", _user_blocks(message.get("content"), where))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(messages, "user", [_tool_result(message, where)])
        else:
            raise InvalidRequest(f"{where}.role '{role}' is not supported.", param=where)
    body: Body = {"model": chat.get("model"), "messages": messages,
                  "max_tokens": chat.get("max_completion_tokens") or chat.get("max_tokens")
                  or default_max_tokens}
    if system:
        body["system"] = system
    for name in ("temperature", "top_p", "stream"):
        if chat.get(name) is not None:
            body[name] = chat[name]
    stop = chat.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if chat.get("tools"):
        body["tools"] = [_tool(tool, f"tools[{number}]")
                         for number, tool in enumerate(chat["tools"])]
    choice = _tool_choice(chat.get("tool_choice"), chat.get("parallel_tool_calls"))
    if choice is not None:
        body["tool_choice"] = choice
    if isinstance(chat.get("user"), str):
        body["metadata"] = {"user_id": chat["user"]}
    return body


def _append(messages: list[Body], role: str, blocks: list[Body]) -> None:
    """Add a turn; a turn of the same role as the last joins it (tool results that follow one
    another answer one assistant turn, in one user message)."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _text_blocks(content: Any, where: str) -> list[Body]:
    """Text blocks of a string or a list of text parts (an empty text is left out: Anthropic
    refuses empty text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for number, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise InvalidRequest(f"{where}.content[{number}] must be a text part.",
                                 param=f"{where}.content")
        if part.get("text"):
            blocks.append({"type": "text", "text": part["text"]})
    return blocks


def _user_blocks(content: Any, where: str) -> list[Body]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks: list[Body] = []
    for number, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_text_blocks([part], where))
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{where}.content[{number}]"))
        else:
            raise _refuse(f"{where}.content[{number}]: a '{kind}' part is not supported",
                          f"{where}.content")
    return blocks


def _image(image_url: Any, where: str) -> Body:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise InvalidRequest(f"{where}.image_url.url must be a string.", param=where)
    data = DATA_URL.match(url)
    if data:
        return {"type": "image", "source": {"type": "base64", "media_type": data["media_type"],
                                            "data": data["data"]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: Body, where: str) -> list[Body]:
    blocks = _text_blocks(message.get("content"), where)
    for number, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                       "input": _arguments(function.get("arguments"),
                                           f"{where}.tool_calls[{number}]")})
    return blocks


def _arguments(arguments: Any, where: str) -> Body:
    """A tool call's arguments (OpenAI's JSON text) as the object Anthropic's input is."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"{where}.function.arguments must be a JSON object.",
                             param=f"{where}.function.arguments")
    return parsed


def _tool_result(message: Body, where: str) -> Body:
    content = message.get("content")
    return {"type": "tool_result", "tool_use_id": message.get("tool_call_id"),
            "content": content if isinstance(content, str) else _text_blocks(content, where)}


def _tool(tool: Any, where: str) -> Body:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or tool.get("type") != "function":
        raise _refuse(f"{where}: only function tools are supported", "tools")
    declared: Body = {"name": function.get("name"),
                      "input_schema": function.get("parameters")
                      or {"type": "object", "properties": {}}}
    if function.get("description"):
        declared["description"] = function["description"]
    return declared


def _tool_choice(choice: Any, parallel: Any) -> Body | None:
    if isinstance(choice, str):
        declared: Body = {"type": TOOL_CHOICE_TYPES.get(choice, "auto")}
    elif isinstance(choice, dict):
        declared = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif parallel is False:
        declared = {"type": "auto"}
    else:
        return None
    if parallel is False and declared["type"] != "none":
        declared["disable_parallel_tool_use"] = True
    return declared


def chat_usage(usage: Any) -> Body:
    """OpenAI's ``usage`` for Anthropic's: prompt_tokens = input + cache reads + cache writes,
    the reads as ``prompt_tokens_details.cached_tokens`` and the writes as its
    ``cache_write_tokens``."""
    usage = usage if isinstance(usage, dict) else {}
    read, written = (usage.get("cache_read_input_tokens") or 0,
                     usage.get("cache_creation_input_tokens") or 0)
    prompt = (usage.get("input_tokens") or 0) + read + written
    completion = usage.get("output_tokens") or 0
    mapped: Body = {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}
    if read or written:
        mapped["prompt_tokens_details"] = {"cached_tokens": read, "cache_write_tokens": written}
    return mapped


def finish_reason(stop_reason: Any) -> str | None:
    """OpenAI's finish_reason for Anthropic's stop_reason (None while it has none)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else None


def _tool_call(block: Body, arguments: str) -> Body:
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": arguments}}


def chat_completion(message: Body, created: int) -> Body:
    """The ``chat.completion`` for an Anthropic Message (made at ``created``, epoch seconds)."""
    blocks = [block for block in message.get("content") or [] if isinstance(block, dict)]
    text = "".join(block.get("text", "") for block in blocks if block.get("type") == "text")
    calls = [_tool_call(block, orjson.dumps(block.get("input") or {}).decode())
             for block in blocks if block.get("type") == "tool_use"]
    reply: Body = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        reply["tool_calls"] = calls
    return {"id": message.get("id"), "object": "chat.completion", "created": created,
            "model": message.get("model"),
            "choices": [{"index": 0, "message": reply, "logprobs": None,
                         "finish_reason": finish_reason(message.get("stop_reason")) or "stop"}],
            "usage": chat_usage(message.get("usage"))}


class ChunkTranslator:
    """Anthropic's stream events (each event's JSON, in order) as ``chat.completion.chunk``
    bodies: the role first, text and tool-call deltas as they come, the finish reason, and, when
    ``include_usage``, a last chunk with the usage (message_start's input counts, the output
    count of message_delta, which is cumulative). One translator per stream."""

    def __init__(self, created: int, include_usage: bool) -> None:
        self.created = created
        self.include_usage = include_usage
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Body = {}
        self.stopped = False
        self._tool_indexes: dict[int, int] = {}

    def _chunk(self, delta: Body, finish: str | None = None) -> Body:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def chunks(self, event: Body) -> list[Body]:
        """The chunks (none, one or two) that one event makes."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = message.get("id"), message.get("model")
            self.usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                number = self._tool_indexes.setdefault(event.get("index", 0),
                                                       len(self._tool_indexes))
                return [self._chunk({"tool_calls": [{"index": number,
                                                     **_tool_call(block, "")}]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta" and event.get("index") in \
                    self._tool_indexes:
                return [self._chunk({"tool_calls": [{
                    "index": self._tool_indexes[event["index"]],
                    "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []  # thinking and signature deltas are the model's own notes
        if kind == "message_delta":
            self.usage.update({name: value for name, value in (event.get("usage") or {}).items()
                               if value is not None})
            reason = finish_reason((event.get("delta") or {}).get("stop_reason"))
            return [self._chunk({}, reason)] if reason else []
        if kind == "message_stop":
            self.stopped = True
            if not self.include_usage:
                return []
            return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": chat_usage(self.usage)}]
        return []  # ping, content_block_stop, and event types added later
