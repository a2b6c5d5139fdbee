"""The gateway's OpenAPI 3 description (served at GET /openapi.json, used to fuzz the API)."""

from __future__ import annotations

from typing import Any

from switchgear import __version__
from switchgear.gateway.requests import CHAT_ROLES, MAX_TOKENS_LIMIT
from switchgear.ledger.rollup import DIMENSIONS
from switchgear.telemetry.latency import GROUPS

JSON = "application/json"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}},
    }},
}

#: Anthropic's error shape, which /v1/messages answers in (protocols/anthropic.py).
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {"type": {"const": "error"}, "request_id": {"type": "string"}, "error": {
        "type": "object",
        "required": ["type", "message"],
        "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
    }},
}

SAMPLING = {
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stream": {"type": "boolean"},
    "stop": {"oneOf": [{"type": "string"},
                       {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
    "user": {"type": "string"},
    "seed": {"type": "integer"},
}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _answers(success: str, *errors: int) -> dict[str, Any]:
    answers: dict[str, Any] = {success: {"description": "OK"}}
    for status in errors:
        answers[str(status)] = {"description": "OpenAI-shaped error",
                                "content": {JSON: {"schema": ERROR}}}
    return answers


def _operation(summary: str, body: dict[str, Any] | None, success: str = "200",
               errors: tuple[int, ...] = (400, 401, 403, 404, 429, 503)) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": _answers(success, *errors),
                                 "security": [{"bearer": []}]}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return operation


def _choice(name: str, values: tuple[str, ...]) -> dict[str, Any]:
    """An optional query parameter: any string (the API says which values it accepts)."""
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
            "description": f"one of {', '.join(values)}"}


def _responses_request(prompt: dict[str, Any]) -> dict[str, Any]:
    """A Responses API request (gateway/responses.py): input as text or items, function tools."""
    item = {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["message", "function_call", "function_call_output"]},
        "role": {"type": "string", "enum": ["user", "assistant", "system", "developer"]},
        "content": {"type": "string"}, "call_id": {"type": "string"},
        "name": {"type": "string"}, "arguments": {"type": "string"},
        "output": {"type": "string"}}}
    tool = _object(["type", "name"], {"type": {"type": "string", "enum": ["function"]},
                                      "name": {"type": "string"},
                                      "description": {"type": "string"},
                                      "parameters": {"type": "object"}})
    return _object(["model"], {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": item}]},
        "instructions": {"type": "string"},
        "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
        "temperature": SAMPLING["temperature"], "top_p": SAMPLING["top_p"],
        "stream": {"type": "boolean"}, "store": {"type": "boolean"},
        "previous_response_id": {"type": "string"},
        "tools": {"type": "array", "items": tool},
        "tool_choice": {"oneOf": [{"type": "string", "enum": ["auto", "none", "required"]},
                                  _object(["type", "name"], {
                                      "type": {"type": "string", "enum": ["function"]},
                                      "name": {"type": "string"}})]},
        "user": {"type": "string"}, "prompt": prompt})


def _messages_request(counting: bool) -> dict[str, Any]:
    """An Anthropic Messages request (gateway/messages.py); ``counting``: count_tokens' body,
    without max_tokens and the sampling fields."""
    block = _object(["type"], {
        "type": {"type": "string", "enum": ["text", "image", "tool_use", "tool_result"]},
        "text": {"type": "string"}, "id": {"type": "string"}, "name": {"type": "string"},
        "input": {"type": "object"}, "tool_use_id": {"type": "string"},
        "content": {"type": "string"}, "is_error": {"type": "boolean"},
        "source": _object(["type"], {"type": {"type": "string", "enum": ["base64", "url"]},
                                     "media_type": {"type": "string"},
                                     "data": {"type": "string"}, "url": {"type": "string"}})})
    turn = _object(["role", "content"], {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {"oneOf": [{"type": "string"},
                              {"type": "array", "items": block, "minItems": 1}]}})
    text = _object(["type", "text"], {"type": {"type": "string", "enum": ["text"]},
                                      "text": {"type": "string"}})
    tool = _object(["name", "input_schema"], {"name": {"type": "string"},
                                              "description": {"type": "string"},
                                              "input_schema": {"type": "object"}})
    fields: dict[str, Any] = {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": turn, "minItems": 1},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": text}]},
        "tools": {"type": "array", "items": tool},
        "tool_choice": _object(["type"], {
            "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
            "name": {"type": "string"}, "disable_parallel_tool_use": {"type": "boolean"}})}
    if counting:
        return _object(["model", "messages"], fields)
    return _object(["model", "max_tokens", "messages"], {
        **fields, "max_tokens": SAMPLING["max_tokens"],
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "top_p": SAMPLING["top_p"], "top_k": {"type": "integer", "minimum": 0},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "stream": {"type": "boolean"},
        "metadata": _object([], {"user_id": {"type": "string"}})})


def _anthropic_operation(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    """A Messages API operation: its key in x-api-key (or a bearer token), errors in
    Anthropic's shape (Anthropic's statuses: 529 when shedding load)."""
    operation = _operation(summary, body, errors=())
    for status in (400, 401, 403, 404, 413, 429, 529):
        operation["responses"][str(status)] = {"description": "Anthropic-shaped error",
                                               "content": {JSON: {"schema": ANTHROPIC_ERROR}}}
    operation["security"] = [{"anthropic": []}, {"bearer": []}]
    return operation


def _batch_paths(limit: dict[str, Any]) -> dict[str, Any]:
    """The Batch API's paths (gateway/batch_api.py): /v1/files and /v1/batches."""
    after = {**limit, "name": "after"}
    file_id = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
    batch_id = {**file_id, "name": "batch_id"}
    upload = _object(["file", "purpose"], {"file": {"type": "string", "format": "binary"},
                                           "purpose": {"type": "string", "enum": ["batch"]}})
    batch = _object(["input_file_id", "endpoint", "completion_window"], {
        "input_file_id": {"type": "string"},
        "endpoint": {"type": "string", "enum": ["/v1/chat/completions", "/v1/completions",
                                                "/v1/embeddings"]},
        "completion_window": {"type": "string", "enum": ["24h"]},
        "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}})
    reading = (401, 403, 404, 503)
    return {
        "/v1/files": {
            "post": {**_operation("Upload a batch input file (JSONL)", None,
                                  errors=(400, 401, 403, 413, 415, 503)),
                     "requestBody": {"required": True, "content": {
                         "multipart/form-data": {"schema": upload}}}},
            "get": {**_operation("The caller's files, newest first", None,
                                 errors=(400, 401, 403, 503)),
                    "parameters": [after, limit, _choice("order", ("asc", "desc")),
                                   _choice("purpose", ("batch", "batch_output"))]},
        },
        "/v1/files/{file_id}": {
            "get": {**_operation("A file", None, errors=reading), "parameters": [file_id]},
            "delete": {**_operation("Delete a file", None, errors=reading),
                       "parameters": [file_id]},
        },
        "/v1/files/{file_id}/content": {"get": {
            **_operation("A file's content", None, errors=reading), "parameters": [file_id]}},
        "/v1/batches": {
            "post": _operation("Create a batch of an uploaded file's requests", batch,
                               errors=(400, 401, 403, 404, 413, 415, 503)),
            "get": {**_operation("The caller's batches, newest first", None,
                                 errors=(400, 401, 403, 503)),
                    "parameters": [after, limit]},
        },
        "/v1/batches/{batch_id}": {"get": {
            **_operation("A batch", None, errors=reading), "parameters": [batch_id]}},
        "/v1/batches/{batch_id}/cancel": {"post": {
            **_operation("Cancel a batch", None, errors=(401, 403, 404, 409, 503)),
            "parameters": [batch_id]}},
    }


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document of the OpenAI surface and the admin API."""
    message = _object(["role", "content"], {"role": {"type": "string", "enum": sorted(CHAT_ROLES)},
                                            "content": {"type": "string"}})
    # A managed prompt template (pipeline/prompt.py), as OpenAI's Responses API names one.
    prompt = _object(["id"], {"id": {"type": "string"},
                              "version": {"type": ["string", "integer"]},
                              "variables": {"type": "object",
                                            "additionalProperties": {"type": "string"}}})
    chat = _object(["model", "messages"], {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": message, "minItems": 1}, "prompt": prompt,
        **SAMPLING})
    completion = _object(["model", "prompt"], {"model": {"type": "string"},
                                               "prompt": {"type": "string"}, **SAMPLING})
    embedding = _object(["model", "input"], {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1}]}})
    new_key = _object(["tenant", "name"], {
        "tenant": {"type": "string"}, "name": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "operator", "approver", "viewer", "client"]},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "tier": {"type": "string", "enum": ["interactive", "standard", "batch"]},
        "feature": {"type": "string"}, "expires_in_s": {"type": "number"},
        "limits": _object([], {"rpm": {"type": "integer", "minimum": 1},
                               "tpm": {"type": "integer", "minimum": 1}}),
        "budget": _object([], {"daily": {"type": "number", "minimum": 0},
                               "monthly": {"type": "number", "minimum": 0}})})
    responses = _responses_request(prompt)
    response_id = {"name": "response_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}
    tenant = {"name": "tenant", "in": "query", "required": False, "schema": {"type": "string"}}
    limit = {"name": "limit", "in": "query", "required": False, "schema": {"type": "string"}}
    since = {"name": "since", "in": "query", "required": False, "schema": {"type": "string"}}
    until = {**since, "name": "until"}
    version = {"name": "version", "in": "query", "required": False,
               "schema": {"type": "string"}}
    change_id = {"name": "change_id", "in": "path", "required": True,
                 "schema": {"type": "string"}}
    # break_glass (on a proposal, apply and rollback) is left out of the bodies on purpose.
    proposal = {"type": "object", "properties": {
        "config": {"type": "object"}, "sections": {"type": "object"},
        "message": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchgear", "version": __version__},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "anthropic": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "paths": {
            "/v1/chat/completions": {"post": _operation("Chat completion", chat)},
            "/v1/completions": {"post": _operation("Text completion", completion)},
            "/v1/embeddings": {"post": _operation("Embeddings", embedding)},
            "/v1/models": {"get": _operation("Model aliases", None, errors=(401, 403, 503))},
            "/v1/messages": {"post": _anthropic_operation("A message (Anthropic Messages API)",
                                                          _messages_request(counting=False))},
            "/v1/messages/count_tokens": {"post": _anthropic_operation(
                "A Messages request's prompt tokens (Anthropic Messages API)",
                _messages_request(counting=True))},
            "/v1/responses": {"post": _operation("A model response (OpenAI Responses API)",
                                                 responses)},
            "/v1/responses/{response_id}": {
                "get": {**_operation("A stored response", None, errors=(401, 403, 404, 503)),
                        "parameters": [response_id]},
                "delete": {**_operation("Delete a stored response", None,
                                        errors=(401, 403, 404, 503)),
                           "parameters": [response_id]},
            },
            **_batch_paths(limit),
            "/admin/keys": {
                "get": {**_operation("List keys", None, errors=(400, 401, 403)),
                        "parameters": [tenant]},
                "post": _operation("Create a key", new_key, "201", (400, 401, 403, 413, 415)),
            },
            "/admin/keys/{key_id}": {"delete": {
                **_operation("Revoke a key", None, errors=(401, 403, 404)),
                "parameters": [{"name": "key_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/admin/records": {"get": {**_operation("Request records by filter, newest first",
                                                    None, errors=(400, 401, 403)),
                                       "parameters": [tenant, limit, since, until, *(
                                           {**limit, "name": name} for name in (
                                               "key", "model", "status", "cache", "guard",
                                               "after"))]}},
            "/admin/records/{request_id}": {"get": {
                **_operation("One request's whole record", None, errors=(400, 401, 403, 404)),
                "parameters": [{"name": "request_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/admin/audit": {"get": {**_operation("Audit trail, newest first (admins)", None,
                                                  errors=(400, 401, 403)),
                                     "parameters": [limit, {**limit, "name": "before"},
                                                    {**limit, "name": "action"}]}},
            "/admin/audit/verify": {"get": {**_operation("Check the audit trail's hash chain "
                                                         "(admins)", None,
                                                         errors=(400, 401, 403)),
                                            "parameters": [{**limit, "name": "anchor"}]}},
            "/admin/latency": {"get": {
                **_operation("Latency percentiles (nearest-rank p50/p95/p99)", None,
                             errors=(400, 401, 403)),
                "parameters": [tenant,
                               {"name": "group_by", "in": "query", "required": False,
                                "schema": {"type": "string"}},
                               {"name": "window_s", "in": "query", "required": False,
                                "schema": {"type": "number"}}]}},
            "/admin/routing": {"get": _operation("Routing state", None, errors=(401, 403))},
            "/admin/slo": {"get": {**_operation("SLOs, error budgets and alerts", None,
                                                errors=(401, 403)),
                                   "parameters": [tenant]}},
            "/admin/quality": {"get": _operation("Quality signals and shifts", None,
                                                 errors=(401, 403, 404))},
            "/admin/cache": {
                "get": _operation("Cache statistics", None, errors=(401, 403)),
                "delete": {**_operation("Purge cached answers", None, errors=(401, 403)),
                           "parameters": [tenant, {"name": "model", "in": "query",
                                                   "required": False,
                                                   "schema": {"type": "string"}}]},
            },
            "/admin/cost": {"get": {**_operation("Cost report", None, errors=(400, 401, 403)),
                                    "parameters": [tenant, since, until,
                                                   _choice("by", DIMENSIONS),
                                                   _choice("chart", DIMENSIONS),
                                                   {"name": "grain", "in": "query",
                                                    "required": False,
                                                    "schema": {"type": "integer", "minimum": 1,
                                                               "maximum": 86400}}]}},
            "/admin/cost/focus": {"get": {**_operation("FOCUS CSV of the ledger", None,
                                                       errors=(400, 401, 403)),
                                          "parameters": [tenant, since, until]}},
            "/admin/config": {"get": {
                **_operation("An applied config version", None, errors=(400, 401, 403, 404)),
                "parameters": [version]}},
            "/admin/config/diff": {"get": {
                **_operation("Diff two config versions", None, errors=(400, 401, 403, 404)),
                "parameters": [{**version, "name": "from"}, {**version, "name": "to"}]}},
            "/admin/config/history": {"get": _operation("Config versions and changes", None,
                                                        errors=(401, 403))},
            "/admin/config/changes": {
                "get": _operation("Config change requests", None, errors=(401, 403)),
                "post": _operation("Propose a config change", proposal, "201",
                                   (400, 401, 403, 409, 413, 415)),
            },
            "/admin/config/changes/{change_id}": {"get": {
                **_operation("A config change request", None, errors=(401, 403, 404)),
                "parameters": [change_id]}},
            "/admin/config/changes/{change_id}/review": {"post": {
                **_operation("Approve or reject a config change", _object(["approve"], {
                    "approve": {"type": "boolean"}, "comment": {"type": "string"}}),
                    errors=(400, 401, 403, 404, 409, 413, 415)),
                "parameters": [change_id]}},
            "/admin/config/changes/{change_id}/apply": {"post": {
                **_operation("Apply a config change", {"type": "object"},
                             errors=(400, 401, 403, 404, 409, 413, 415)),
                "parameters": [change_id]}},
            "/admin/config/rollback": {"post": _operation(
                "Propose a rollback to a config version",
                _object(["version"], {"version": {"type": "integer", "minimum": 1},
                                      "message": {"type": "string"}}), "201",
                (400, 401, 403, 404, 409, 413, 415))},
            "/admin/changes": {"get": {
                **_operation("Applied config versions beside p95, error rate and cost per "
                             "request before and after each", None, errors=(400, 401, 403)),
                "parameters": [tenant, since, until,
                               {"name": "window_s", "in": "query", "required": False,
                                "schema": {"type": "number"}}]}},
            "/admin/prompts": {"get": _operation("Managed prompt templates", None,
                                                 errors=(401, 403))},
            "/admin/prompts/{name}": {"get": {
                **_operation("A managed prompt template and its versions", None,
                             errors=(401, 403, 404)),
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/admin/whoami": {"get": _operation("The caller's key (any role), or open mode",
                                                None, errors=(401, 503))},
            "/admin/overview": {"get": {
                **_operation("Requests, errors, tokens and nearest-rank e2e/TTFT percentiles "
                             "per bucket and group", None, errors=(400, 401, 403)),
                "parameters": [tenant, _choice("group_by", GROUPS),
                               {"name": "window_s", "in": "query", "required": False,
                                "schema": {"type": "number"}},
                               {"name": "bucket_s", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1}}]}},
            "/admin/budgets": {"get": {**_operation("Spending budgets, spent and how close",
                                                    None, errors=(400, 401, 403)),
                                       "parameters": [tenant]}},
            "/admin/scorecard": {"get": {
                **_operation("The AI infrastructure scorecard with its evidence (admins)", None,
                             errors=(400, 401, 403)),
                "parameters": [{"name": "window_s", "in": "query", "required": False,
                                "schema": {"type": "number"}}]}},
            "/ui": {"get": {"summary": "The operator console's page (HTML; not JSON)",
                            "responses": {"200": {"description": "index.html",
                                                  "content": {"text/html": {}}}}}},
            "/ui/{asset}": {"get": {
                "summary": "One of the console's static files (JavaScript, CSS, SVG)",
                "parameters": [{"name": "asset", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {**_answers("200", 404), "200": {"description": "The file"},
                              "304": {"description": "The browser's copy is current (ETag)"}}}},
            "/healthz": {"get": {"summary": "Alive", "responses": _answers("200")}},
            "/readyz": {"get": {"summary": "Ready", "responses": {
                "200": {"description": "Ready"},
                "503": {"description": "Not ready; the report says which dependency"}}}},
        },
    }
