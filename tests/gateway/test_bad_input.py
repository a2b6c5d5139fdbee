"""Bad input gets an OpenAI-shaped 4xx, and the gateway keeps serving afterwards."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import urllib3

from switchgear.config import Config

from servers import gateway


@pytest.fixture
def base_url(make_config: Callable[..., Config]) -> Iterator[str]:
    """A gateway whose only model is simulated in-process (validation happens before it)."""
    config = make_config(
        {"sim": {"deployments": [{"name": "s1", "backend": "simulated",
                                  "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}},
        max_body_bytes=64 * 1024,
    )
    with gateway(config) as url:
        yield url


def post(base_url: str, path: str, body: bytes, content_type: str | None = "application/json"
         ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST raw bytes; return status, parsed JSON body and headers."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = urllib3.request("POST", base_url + path, body=body, headers=headers,
                               retries=False, timeout=10)
    return response.status, json.loads(response.data), dict(response.headers)


def assert_openai_error(body: dict[str, Any], kind: str = "invalid_request_error") -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == kind
    assert body["error"]["message"]


CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({"model": "sim"}, "messages"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": "hello"}, "messages"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "max_tokens": 10**12}, "max_tokens"),
        ({**CHAT, "max_tokens": "ten"}, "max_tokens"),
        ({**CHAT, "max_tokens": True}, "max_tokens"),
        ({**CHAT, "temperature": 7}, "temperature"),
        ({**CHAT, "top_p": "high"}, "top_p"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "model": 42}, "model"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_invalid_chat_bodies_are_400_naming_the_param(base_url: str, body: dict[str, Any],
                                                      param: str) -> None:
    status, answer, headers = post(base_url, "/chat/completions", json.dumps(body).encode())
    assert status == 400
    assert_openai_error(answer)
    assert answer["error"]["param"] == param
    assert headers["x-request-id"].startswith("req_")


def test_malformed_json_is_400(base_url: str) -> None:
    status, answer, _ = post(base_url, "/chat/completions", b'{"model": "sim", "messages": [')
    assert status == 400
    assert_openai_error(answer)
    assert "JSON" in answer["error"]["message"]


def test_a_json_array_body_is_400(base_url: str) -> None:
    status, answer, _ = post(base_url, "/chat/completions", b"[1, 2]")
    assert status == 400
    assert_openai_error(answer)


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(base_url: str, content_type: str | None) -> None:
    status, answer, _ = post(base_url, "/chat/completions", json.dumps(CHAT).encode(),
                             content_type)
    assert status == 415
    assert_openai_error(answer)


def test_body_over_the_limit_is_413(base_url: str) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    status, answer, _ = post(base_url, "/chat/completions", json.dumps(big).encode())
    assert status == 413
    assert_openai_error(answer)


def test_body_over_the_limit_without_content_length_is_413(base_url: str) -> None:
    """A chunked upload is counted as it arrives and refused once past the limit."""
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    port = int(base_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(big), 8192):
            piece = big[start:start + 8192]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break  # the server answered and closed: the rest of the body is refused
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413")


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Note: a\x7fb\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX No\x01te: b\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n",
    b"GET /v1/models HTTP/9.9 extra\r\n\r\n",
])
def test_bytes_that_are_not_http_get_a_400_in_openai_shape(base_url: str,
                                                             request_bytes: bytes) -> None:
    port = int(base_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_bytes)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes after its answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)
    assert_openai_error(error)
    assert error["error"]["code"] == "invalid_http"
    assert urllib3.request("GET", base_url + "/models", timeout=10).status == 200


def test_unknown_path_and_method(base_url: str) -> None:
    status, answer, _ = post(base_url, "/nope", b"{}")
    assert status == 404
    assert_openai_error(answer)
    response = urllib3.request("GET", base_url + "/chat/completions", retries=False, timeout=10)
    assert response.status == 405
    assert_openai_error(json.loads(response.data))


def test_the_sdk_raises_the_right_exceptions(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client, \
            pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="no-such-model", messages=[
            {"role": "user", "content": "hi"}])
    assert not_found.value.code == "model_not_found"
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client, \
            pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="sim", messages=[
            {"role": "user", "content": "hi"}], max_tokens=-5)


def test_still_serving_after_bad_input(base_url: str) -> None:
    for body in (b"{", b"[]", b'{"model": 1}', b"\xff\xfe"):
        status, _, _ = post(base_url, "/chat/completions", body)
        assert 400 <= status < 500
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        answer = client.chat.completions.create(model="sim", max_tokens=4, messages=[
            {"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_json_nested_too_deep_is_400(base_url: str) -> None:
    deep = b'{"model": "sim", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, answer, _ = post(base_url, "/chat/completions", deep)
    assert status == 400
    assert_openai_error(answer)


def test_headers_over_the_limit_are_431(base_url: str) -> None:
    response = urllib3.request("POST", base_url + "/chat/completions", body=json.dumps(CHAT),
                               headers={"Content-Type": "application/json",
                                        "X-Padding": "x" * 40_000}, retries=False, timeout=10)
    assert response.status == 431
    assert_openai_error(json.loads(response.data))
