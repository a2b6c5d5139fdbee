"""Parse and validate OpenAI request bodies into Exchanges.

Validation checks what Switchgear itself relies on (types, ranges, required fields) and passes every
other field through to the model server untouched, so new OpenAI parameters keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchgear.errors import InvalidRequest
from switchgear.exchange import Exchange, Operation
from switchgear.ids import TimeOrderedIds

#: The largest max_tokens accepted at all; a deployment's context window narrows it further.
MAX_TOKENS_LIMIT = 1 << 20
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

Check = Callable[[Any, str], None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ranged(kind: str, accepts: Callable[[Any], bool], low: float, high: float) -> Check:
    def check(value: Any, param: str) -> None:
        if not accepts(value):
            raise InvalidRequest(f"{param} must be {kind}, got {value!r}", param=param)
        if not low <= value <= high:
            raise InvalidRequest(f"{param} must be between {low:g} and {high:g}, got {value}",
                                 param=param)
    return check


def _number(low: float, high: float) -> Check:
    return _ranged("a number", _is_number, low, high)


def _integer(low: int, high: int) -> Check:
    return _ranged("an integer", _is_int, low, high)


def _boolean(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{param} must be a boolean, got {value!r}", param=param)


def _string(value: Any, param: str) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(f"{param} must be a string, got {value!r}", param=param)


def _stop(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if (not isinstance(value, list) or len(value) > 4
            or not all(isinstance(item, str) for item in value)):
        raise InvalidRequest(f"{param} must be a string or a list of up to 4 strings", param=param)


def _stream_options(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be an object", param=param)
    if "include_usage" in value:
        _boolean(value["include_usage"], f"{param}.include_usage")


def _messages(value: Any, param: str) -> None:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{param} must be a non-empty array of messages", param=param)
    for index, message in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise InvalidRequest(f"{where}.role must be one of {sorted(CHAT_ROLES)}, got {role!r}",
                                 param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            _content_parts(content, f"{where}.content")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")


def _content_parts(value: Any, param: str) -> None:
    """An array of content parts: objects with a string ``type``; a text part's ``text`` is a
    string (other part types pass through to the model server)."""
    if not isinstance(value, list) or not all(
        isinstance(part, dict) and isinstance(part.get("type"), str)
        and (part["type"] != "text" or isinstance(part.get("text"), str))
        for part in value
    ):
        raise InvalidRequest(f"{param} must be a string or an array of parts, each an object "
                             "with a string type (a text part with a string text)", param=param)


def _own_messages(value: Any, param: str) -> None:
    """A chat request naming a prompt template may bring no messages of its own."""
    if value != []:
        _messages(value, param)


def _template_reference(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be an object naming a prompt template (id)",
                             param=param)


def _prompt(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and value and (
        all(isinstance(item, str) for item in value)
        or all(_is_int(item) for item in value)
        or all(isinstance(item, list) and item and all(_is_int(t) for t in item)
               for item in value)
    ):
        return
    raise InvalidRequest(f"{param} must be a string, an array of strings or of token ids",
                         param=param)


def _encoding_format(value: Any, param: str) -> None:
    if value not in ("float", "base64"):
        raise InvalidRequest(f"{param} must be 'float' or 'base64'", param=param)


_SAMPLING: dict[str, Check] = {
    "max_tokens": _integer(1, MAX_TOKENS_LIMIT),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _integer(1, 128),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _integer(-(1 << 63), (1 << 64) - 1),
    "stop": _stop,
    "stream": _boolean,
    "stream_options": _stream_options,
    "user": _string,
}

_CHAT: dict[str, Check] = {
    **_SAMPLING, "messages": _messages, "max_completion_tokens": _integer(1, MAX_TOKENS_LIMIT),
    "logprobs": _boolean, "top_logprobs": _integer(0, 20), "prompt": _template_reference}

#: Per operation: the required fields, then the checks of every field Switchgear looks at.
_SCHEMAS: dict[Operation, tuple[tuple[str, ...], dict[str, Check]]] = {
    Operation.CHAT: (("model", "messages"), _CHAT),
    Operation.COMPLETIONS: (
        ("model", "prompt"),
        {**_SAMPLING, "prompt": _prompt, "echo": _boolean, "suffix": _string,
         "logprobs": _integer(0, 5), "best_of": _integer(1, 20)},
    ),
    Operation.EMBEDDINGS: (
        ("model", "input"),
        {"input": _prompt, "encoding_format": _encoding_format,
         "dimensions": _integer(1, 65536), "user": _string},
    ),
}

#: A chat request naming a prompt template (pipeline/prompt.py renders it): its own messages
#: may be left out or empty.
_PROMPTED_CHAT: tuple[tuple[str, ...], dict[str, Check]] = (("model",), {**_CHAT, "messages": _own_messages})


class RequestIds(TimeOrderedIds):
    """Issues request ids: ``req_`` and a time-ordered id, so the request log's primary key
    grows at its end."""

    def new(self) -> str:
        """A fresh request id."""
        return f"req_{super().new()}"


#: Longest feature tag kept (a header is client input: bounded before it reaches records).
MAX_TAG_LENGTH = 64


def _tag(value: bytes | None) -> str | None:
    if not value:
        return None
    return value.decode("latin-1")[:MAX_TAG_LENGTH]


def attribute(exchange: Exchange, feature: bytes | None, priority: bytes | None,
              no_cache: bool = False) -> None:
    """Note who is asking: the OpenAI ``user`` field, the feature tag and the priority tier
    asked for in headers, and a cache opt-out (the key was checked before the body was read)."""
    if no_cache:
        exchange.cache_status = "bypass"
    user = exchange.body.get("user")
    exchange.principal.user = user[:MAX_TAG_LENGTH] if isinstance(user, str) else None
    exchange.principal.feature = _tag(feature)
    exchange.requested_priority = _tag(priority) or None


def make_exchange(operation: Operation, body: Any, request_id: str) -> Exchange:
    """Validate ``body`` for ``operation`` and wrap it in an Exchange; raise InvalidRequest."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    prompted = operation is Operation.CHAT and body.get("prompt") is not None
    required, checks = _PROMPTED_CHAT if prompted else _SCHEMAS[operation]
    for name in required:
        if body.get(name) is None:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name,
                                 code="missing_required_parameter")
    model = body["model"]
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model must be a non-empty string", param="model")
    for name, value in body.items():
        check = checks.get(name)
        if check is not None and value is not None:
            check(value, name)
    stream = operation is not Operation.EMBEDDINGS and body.get("stream") is True
    if body.get("stream_options") is not None and not stream:
        raise InvalidRequest("stream_options is only allowed when stream is true",
                             param="stream_options")
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    return Exchange(request_id=request_id, operation=operation, body=body, model=model,
                    stream=stream, include_usage=include_usage)
