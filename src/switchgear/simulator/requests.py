"""Validated OpenAI request bodies, as the simulated model needs them.

Anything malformed raises ``InvalidRequest`` naming the offending field, as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from switchgear.errors import ContextWindowExceeded, InvalidRequest
from switchgear.exchange import Operation
from switchgear.simulator.text import estimate_tokens

Body = dict[str, Any]

#: The largest embedding a request may ask for with ``dimensions``.
MAX_EMBEDDING_DIMENSIONS = 4096


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A chat or text completion request: what to answer, and within which limits."""

    operation: Operation
    model: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    ignore_eos: bool = False
    #: The function tool the model calls instead of answering in text, if any.
    tool: ToolCall | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of a function tool: its name and arguments (JSON text)."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """An embeddings request: the texts to embed and the vector shape asked for."""

    model: str
    inputs: tuple[str, ...]
    prompt_tokens: int
    dimensions: int | None
    encoding_format: str


def parse_generation(operation: Operation, body: Body, context_window: int) -> GenerationRequest:
    """Validate a chat or completions body and check it fits ``context_window``."""
    if operation is Operation.CHAT:
        prompt_text = _messages_text(body.get("messages"))
        max_tokens = _optional_positive_int(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = _optional_positive_int(body, "max_tokens")
    elif operation is Operation.COMPLETIONS:
        prompt_text = _prompt_text(body.get("prompt"))
        max_tokens = _optional_positive_int(body, "max_tokens")
    else:
        raise InvalidRequest(f"{operation} is not a generation", param="model")
    _single_choice(body)
    prompt_tokens = estimate_tokens(prompt_text)
    wanted = prompt_tokens + (max_tokens or 1)
    if wanted > context_window:
        raise ContextWindowExceeded(
            f"This model's maximum context length is {context_window} tokens. However, you "
            f"requested {wanted} tokens ({prompt_tokens} in the messages, {max_tokens or 1} in "
            "the completion). Please reduce the length of the messages or completion.",
            param="messages" if operation is Operation.CHAT else "prompt",
        )
    stream = _optional_bool(body, "stream")
    return GenerationRequest(
        operation=operation,
        model=_model(body),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=stream and _include_usage(body),
        ignore_eos=_optional_bool(body, "ignore_eos"),
        tool=_tool_call(body) if operation is Operation.CHAT else None,
    )


def parse_embedding(body: Body) -> EmbeddingRequest:
    """Validate an embeddings body."""
    inputs = _embedding_inputs(body.get("input"))
    dimensions = _optional_positive_int(body, "dimensions")
    if dimensions is not None and dimensions > MAX_EMBEDDING_DIMENSIONS:
        raise InvalidRequest(
            f"dimensions must be at most {MAX_EMBEDDING_DIMENSIONS}", param="dimensions"
        )
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be 'float' or 'base64'",
                             param="encoding_format")
    return EmbeddingRequest(
        model=_model(body),
        inputs=inputs,
        prompt_tokens=sum(estimate_tokens(text) for text in inputs),
        dimensions=dimensions,
        encoding_format=encoding_format,
    )


def _model(body: Body) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    return model


def _messages_text(messages: object) -> str:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    lines = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"{where} must be an object with a role", param=where)
        lines.append(f"{message['role']}: {_content_text(message.get('content'), where)}")
    return "\n".join(lines)


def _content_text(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    raise InvalidRequest(f"{where}.content must be a string or an array of parts",
                         param=f"{where}.content")


def _prompt_text(prompt: object) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (one prompt per request)", param="prompt")
    return prompt


def _embedding_inputs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(_is_int(item) for item in value):
        value = [value]  # one input given as token ids
    if not isinstance(value, list) or not value:
        raise InvalidRequest("input must be a string or a non-empty array", param="input")
    inputs = []
    for item in value:
        if isinstance(item, list) and item and all(_is_int(token) for token in item):
            inputs.append(" ".join(str(token) for token in item))
        elif isinstance(item, str) and item:
            inputs.append(item)
        else:
            raise InvalidRequest("each input must be a non-empty string or array of token ids",
                                 param="input")
    return tuple(inputs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_positive_int(body: Body, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)
    return int(value)


def _optional_bool(body: Body, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a boolean", param=name)
    return value


def _single_choice(body: Body) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("only n=1 is supported", param="n")


def _tool_call(body: Body) -> ToolCall | None:
    """The call a chat request with function ``tools`` gets: the tool ``tool_choice`` names,
    else the first, with an argument of each of its parameters' types; none when the tools'
    results already ended the conversation (its last message is a tool's) or tool_choice is
    "none"."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(
            isinstance(tool, dict) and isinstance(tool.get("function"), dict)
            and isinstance(tool["function"].get("name"), str) for tool in tools):
        raise InvalidRequest("tools must be an array of function tools, each with a name",
                             param="tools")
    messages = body.get("messages") or [{}]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or messages[-1].get("role") == "tool":
        return None
    functions = {tool["function"]["name"]: tool["function"] for tool in tools}
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    function = functions.get(named) if isinstance(named, str) else None
    function = function or tools[0]["function"]
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    arguments = {name: _sample(schema) for name, schema in (
        properties.items() if isinstance(properties, dict) else ())}
    return ToolCall(function["name"], json.dumps(arguments))


#: A sample argument of each JSON schema type.
_SAMPLES: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1.5, "boolean": True,
                            "array": [], "object": {}}


def _sample(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return _SAMPLES.get(kind) if isinstance(kind, str) else None


def _include_usage(body: Body) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    return _optional_bool(options, "include_usage")
