"""OpenAI's Responses API over the chat shape: a Responses request becomes a chat body, the chat
reply becomes a Response object, and a stream of chat chunks becomes the Responses API's typed
events (``response.created`` ... ``response.completed``), numbered as the SDK expects.

Served: ``input`` as a string or items (messages with ``input_text`` / ``output_text`` /
``input_image`` content, ``function_call`` and ``function_call_output`` items; ``reasoning``
items are dropped, a chat model cannot read them), ``instructions``, function ``tools``,
``tool_choice``, ``parallel_tool_calls``, ``max_output_tokens``, ``temperature``, ``top_p``,
``text.format`` (json_object and json_schema), ``user``, ``prompt`` (a managed template) and
``stream``. What a chat model cannot do (hosted tools, background runs, conversations, files)
is a 400 naming the parameter; fields the chat shape has no place for (``reasoning``,
``metadata``, ``include``...) are not sent upstream. ``store`` and ``previous_response_id``
are the gateway's business (gateway/responses.py): ``chat_body`` takes the conversation so far
as items.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from switchgear.errors import InvalidRequest, SwitchgearError

Body = dict[str, Any]
Item = dict[str, Any]

#: Message roles an input item may have; ``developer`` becomes ``system`` upstream (chat model
#: servers rarely know it).
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
#: Request fields copied to the chat body as they are (the chat validation checks them).
SAMPLING = ("temperature", "top_p", "parallel_tool_calls", "user", "prompt", "stream")
#: Request fields that ask for what a chat model behind the gateway cannot do.
UNSUPPORTED = ("background", "conversation")
#: Item types dropped on the way to the chat body.
DROPPED_ITEMS = frozenset({"reasoning"})
#: The ``error.code`` of a failed response, by the gateway error's status (the SDK knows
#: these codes; anything else is ``server_error``).
FAILURE_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}
#: A chat finish_reason that leaves the response incomplete, and the reason it gives.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _invalid(message: str, param: str, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _unsupported(message: str, param: str) -> InvalidRequest:
    return _invalid(message, param, "unsupported_parameter")


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{param} must be a string", param)
    return value


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{param} must be an object", param)
    return value


def input_items(body: Body) -> list[Item]:
    """The request's ``input`` as a list of items (a string is one user message); checked to be
    a list of objects, each with a known shape later (``chat_body``)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise _invalid("input must be a string or an array of items", "input")
    for index, item in enumerate(value):
        _object(item, f"input[{index}]")
    return list(value)


def chat_body(body: Any, history: Sequence[Item] = ()) -> Body:
    """The chat body for the Responses request ``body``, after the conversation ``history``
    (the items of the responses it continues); InvalidRequest naming the field at fault."""
    body = _object(body, "body")
    for name in UNSUPPORTED:
        if body.get(name):
            raise _unsupported(f"{name} is not supported by this gateway", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("Missing required parameter: 'model'.", "model",
                       "missing_required_parameter")
    items = input_items(body)
    if not items and body.get("prompt") is None:
        raise _invalid("Missing required parameter: 'input'.", "input",
                       "missing_required_parameter")
    messages: list[Body] = []
    instructions = body.get("instructions")
    if instructions is not None:
        messages.append({"role": "system", "content": _string(instructions, "instructions")})
    for source, given in (("previous_response_id", history), ("input", items)):
        for index, item in enumerate(given):
            _add_item(messages, item, source, index)
    chat: Body = {"model": model, "messages": messages}
    for name in SAMPLING:
        value = body.get(name)
        if value is not None:
            chat[name] = value
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _invalid("max_output_tokens must be a positive integer", "max_output_tokens")
        chat["max_tokens"] = limit
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise _invalid("store must be a boolean", "store")
    if body.get("metadata") is not None:
        _object(body["metadata"], "metadata")
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def _add_item(messages: list[Body], item: Item, source: str, index: int) -> None:
    """Append the chat message(s) ``item`` (``source``'s ``index``-th) stands for; function
    calls join the assistant message before them, as a chat model wrote them."""
    kind = item.get("type", "message")
    role = item.get("role")
    content = item.get("content")
    if kind == "message" and role in ROLES and isinstance(content, str):  # the common case
        messages.append({"role": ROLES[role], "content": content})
        return
    where = f"{source}[{index}]"
    if kind == "message":
        if role not in ROLES:
            raise _invalid(f"{where}.role must be one of {sorted(ROLES)}", f"{where}.role")
        messages.append({"role": ROLES[role], "content": _content(content, f"{where}.content")})
    elif kind == "function_call":
        call = {"id": _string(item.get("call_id"), f"{where}.call_id"), "type": "function",
                "function": {"name": _string(item.get("name"), f"{where}.name"),
                             "arguments": _string(item.get("arguments"), f"{where}.arguments")}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        messages.append({"role": "tool",
                         "tool_call_id": _string(item.get("call_id"), f"{where}.call_id"),
                         "content": output if isinstance(output, str)
                         else _content(output, f"{where}.output")})
    elif kind not in DROPPED_ITEMS:
        raise _unsupported(f"{where}.type {kind!r} is not supported: use message, "
                           "function_call or function_call_output items", f"{where}.type")


def _content(value: Any, param: str) -> str | list[Body]:
    """A message's content as chat content: a string, or chat parts (text, image_url)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _invalid(f"{param} must be a string or an array of content parts", param)
    parts: list[Body] = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        part = _object(part, where)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _string(part.get("text"), f"{where}.text")})
        elif kind == "refusal":
            parts.append({"type": "text",
                          "text": _string(part.get("refusal"), f"{where}.refusal")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise _unsupported(f"{where}: only images given by image_url are supported",
                                   f"{where}.image_url")
            image: Body = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _unsupported(f"{where}.type {kind!r} is not supported: use input_text, "
                               "output_text or input_image", f"{where}.type")
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _tools(value: Any) -> list[Body]:
    if not isinstance(value, list):
        raise _invalid("tools must be an array", "tools")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        tool = _object(tool, where)
        if tool.get("type") != "function":
            raise _unsupported(f"{where}.type {tool.get('type')!r} is not supported: only "
                               "function tools are", f"{where}.type")
        function: Body = {"name": _string(tool.get("name"), f"{where}.name")}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> str | Body:
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function":
        return {"type": "function",
                "function": {"name": _string(value.get("name"), "tool_choice.name")}}
    raise _unsupported("tool_choice must be auto, none, required or a function", "tool_choice")


def _response_format(text: Any) -> Body | None:
    if text is None:
        return None
    form = _object(text, "text").get("format")
    if form is None:
        return None
    kind = _object(form, "text.format").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {"name": _string(form.get("name"), "text.format.name"),
                  "schema": _object(form.get("schema"), "text.format.schema")}
        for name in ("description", "strict"):
            if form.get(name) is not None:
                schema[name] = form[name]
        return {"type": "json_schema", "json_schema": schema}
    raise _unsupported(f"text.format.type {kind!r} is not supported", "text.format.type")


@dataclass(slots=True)
class ResponseFrame:
    """What a Response object repeats of its request, and its identity: ``id`` is
    ``resp_<key>``, its output items' ids are made from ``key`` too."""

    key: str
    model: str
    created_at: int
    request: Body
    previous_response_id: str | None = None

    @classmethod
    def of(cls, request: Body, request_id: str, now: float | None = None) -> ResponseFrame:
        """The frame of the response to ``request``: its id follows the gateway's request id
        (``req_X`` answers as ``resp_X``), so a response and its record are found by the other."""
        return cls(request_id.removeprefix("req_"), str(request["model"]),
                   int(time.time() if now is None else now), request,
                   request.get("previous_response_id"))

    @property
    def id(self) -> str:
        """The response's id."""
        return "resp_" + self.key

    def response(self, output: list[Item], status: str, usage: Body | None = None,
                 incomplete: str | None = None, error: Body | None = None) -> Body:
        """The Response object with ``output`` and ``usage`` (Responses shape)."""
        get = self.request.get
        text = get("text")
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": None if incomplete is None else {"reason": incomplete},
            "instructions": get("instructions"),
            "max_output_tokens": get("max_output_tokens"),
            "metadata": get("metadata") or {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": get("parallel_tool_calls", True),
            "previous_response_id": self.previous_response_id,
            "store": get("store", True),
            "temperature": get("temperature"),
            "text": text if isinstance(text, dict) and text else {"format": {"type": "text"}},
            "tool_choice": get("tool_choice", "auto"),
            "tools": get("tools") or [],
            "top_p": get("top_p"),
            "truncation": "disabled",
            "usage": usage,
            "user": get("user"),
        }

    def message_id(self, index: int) -> str:
        """The item id of the output message at output index ``index``."""
        return f"msg_{self.key}_{index}"

    def call_id(self, index: int) -> str:
        """The item id of the response's ``index``-th function call."""
        return f"fc_{self.key}_{index}"


def response_usage(usage: Any) -> Body | None:
    """A chat ``usage`` object in the Responses shape (None stays None)."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(details.get("cached_tokens") or 0),
                                 "cache_write_tokens": int(details.get("cache_write_tokens")
                                                           or 0)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(output_details.get("reasoning_tokens")
                                                          or 0)},
        "total_tokens": prompt + completion,
    }


def message_item(frame: ResponseFrame, index: int, text: str, status: str) -> Item:
    """The assistant message output item at output index ``index``, holding ``text``."""
    return {"type": "message", "id": frame.message_id(index), "status": status,
            "role": "assistant", "content": [_output_text(text)]}


def _output_text(text: str) -> Body:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(frame: ResponseFrame, index: int, call_id: str, name: str, arguments: str,
              status: str) -> Item:
    """A function_call output item."""
    return {"type": "function_call", "id": frame.call_id(index), "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def _finish(finish_reason: str | None) -> tuple[str, str | None]:
    """The response status and incomplete reason a chat finish_reason gives."""
    incomplete = INCOMPLETE.get(finish_reason or "")
    return ("incomplete", incomplete) if incomplete else ("completed", None)


def response_of(frame: ResponseFrame, reply: Body) -> Body:
    """The Response object for a whole chat completion ``reply``."""
    choices = reply.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    status, incomplete = _finish(choice.get("finish_reason"))
    item_status = "incomplete" if incomplete else "completed"
    output: list[Item] = []
    text = message.get("content")
    calls = message.get("tool_calls") or []
    if text or not calls:
        output.append(message_item(frame, 0, text or "", item_status))
    for index, call in enumerate(calls):
        function = call.get("function") or {}
        output.append(call_item(frame, index, str(call.get("id") or frame.call_id(index)),
                                str(function.get("name") or ""),
                                str(function.get("arguments") or ""), "completed"))
    return frame.response(output, status, response_usage(reply.get("usage")), incomplete)


@dataclass(slots=True)
class _OpenCall:
    """A function call being streamed: its output index and what came of it so far."""

    output_index: int
    item: Item


@dataclass(slots=True)
class ResponseEvents:
    """Turns a stream of chat chunks into the Responses API's events, in order, each with its
    ``sequence_number``: ``opening`` first, ``chunk`` for each chat chunk, then ``closing``
    (or ``failure`` when the stream broke). ``response`` is the final Response object."""

    frame: ResponseFrame
    sequence: int = 0
    output: list[Item] = field(default_factory=list)
    #: The open message's output index and text pieces (None: no message open).
    message_index: int | None = None
    text: list[str] = field(default_factory=list)
    #: Function calls open now, by their chat tool-call index.
    calls: dict[int, _OpenCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Body | None = None
    response: Body | None = None

    def _event(self, kind: str, **fields: Any) -> Body:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def opening(self) -> list[Body]:
        """``response.created`` and ``response.in_progress``."""
        started = self.frame.response([], "in_progress")
        return [self._event("response.created", response=started),
                self._event("response.in_progress", response=started)]

    def chunk(self, chunk: Body) -> list[Body]:
        """The events one chat chunk gives (none for a chunk with nothing new)."""
        events: list[Body] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text(content)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _text(self, piece: str) -> list[Body]:
        events: list[Body] = []
        if self.message_index is None:
            self.message_index = len(self.output)
            self.output.append(message_item(self.frame, self.message_index, "", "in_progress"))
            item = {**self.output[-1], "content": []}
            events += [self._event("response.output_item.added", output_index=self.message_index,
                                   item=item),
                       self._event("response.content_part.added", **self._where(),
                                   part=_output_text(""))]
        self.text.append(piece)
        return [*events, self._event("response.output_text.delta", **self._where(), delta=piece,
                                     logprobs=[])]

    def _where(self) -> Body:
        index = self.message_index or 0
        return {"item_id": self.frame.message_id(index), "output_index": index,
                "content_index": 0}

    def _call(self, call: Body) -> list[Body]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        events: list[Body] = []
        open_call = self.calls.get(index)
        if open_call is None:
            events += self._close_message()
            for earlier in list(self.calls):
                events += self._close_call(earlier)
            number = sum(item["type"] == "function_call" for item in self.output)
            item = call_item(self.frame, number, str(call.get("id") or self.frame.call_id(number)),
                             str(function.get("name") or ""), "", "in_progress")
            open_call = self.calls[index] = _OpenCall(len(self.output), item)
            self.output.append(item)
            events.append(self._event("response.output_item.added",
                                      output_index=open_call.output_index, item=dict(item)))
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            open_call.item["arguments"] += arguments
            events.append(self._event("response.function_call_arguments.delta",
                                      item_id=open_call.item["id"],
                                      output_index=open_call.output_index, delta=arguments))
        return events

    def _close_message(self, status: str = "completed") -> list[Body]:
        if self.message_index is None:
            return []
        text = "".join(self.text)
        item = message_item(self.frame, self.message_index, text, status)
        self.output[self.message_index] = item
        events = [self._event("response.output_text.done", **self._where(), text=text,
                              logprobs=[]),
                  self._event("response.content_part.done", **self._where(),
                              part=_output_text(text)),
                  self._event("response.output_item.done", output_index=self.message_index,
                              item=item)]
        self.message_index = None
        self.text = []
        return events

    def _close_call(self, index: int) -> list[Body]:
        call = self.calls.pop(index)
        call.item["status"] = "completed"
        return [self._event("response.function_call_arguments.done", item_id=call.item["id"],
                            output_index=call.output_index, arguments=call.item["arguments"]),
                self._event("response.output_item.done", output_index=call.output_index,
                            item=dict(call.item))]

    def closing(self) -> list[Body]:
        """Close what is open, then ``response.completed`` (``response.incomplete`` when the
        answer was cut short) with the usage."""
        status, incomplete = _finish(self.finish_reason)
        events = self._close_message("incomplete" if incomplete else "completed")
        for index in list(self.calls):
            events += self._close_call(index)
        if not self.output:  # an empty answer is still a message
            self.output.append(message_item(self.frame, 0, "", status))
        self.response = self.frame.response(self.output, status, response_usage(self.usage),
                                            incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self._event(kind, response=self.response)]

    def failure(self, error: SwitchgearError) -> list[Body]:
        """An ``error`` event, then ``response.failed`` with the error in the response."""
        self.response = self.frame.response(
            self.output, "failed", response_usage(self.usage),
            error={"code": FAILURE_CODES.get(error.status, "server_error"),
                   "message": error.message, "param": error.param, "type": error.type})
        return [self._event("error", code=error.code or error.type, message=error.message,
                            param=error.param),
                self._event("response.failed", response=self.response)]


def conversation(request_items: Sequence[Item], response: Body) -> list[Item]:
    """The items a later request continuing ``response`` starts from: the input that led to it
    (its history and its own input) and its output."""
    return [*request_items, *(response.get("output") or [])]
