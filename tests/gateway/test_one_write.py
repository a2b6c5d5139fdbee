"""OneWriteCycle: a response's head leaves with its body's first write (one system call and one
TCP segment for a whole answer); a streamed answer's head with its first events; a long body is
not copied behind the head. The transport here records each write: what a real socket cannot
tell apart (TCP may merge or split writes)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections.abc import Callable

from uvicorn.protocols.http.flow_control import FlowControl

from switchgear.config import Config
from switchgear.gateway.connections import MOST_COPIED, OneWriteCycle

from servers import gateway


class Recording(asyncio.Transport):
    """A transport that keeps what each write wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(keep_alive: bool = True) -> tuple[OneWriteCycle, Recording]:
    transport = Recording()
    made = OneWriteCycle(
        scope={"type": "http", "method": "POST", "path": "/", "headers": []},  # type: ignore[typeddict-item]
        transport=transport, flow=FlowControl(transport), logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"), access_log=False, default_headers=[],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
        on_response=lambda: None)
    return made, transport


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"


async def test_a_whole_answer_is_one_write() -> None:
    answer, transport = cycle()
    await answer.send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"2")]})
    assert transport.writes == []
    await answer.send({"type": "http.response.body", "body": b"{}"})
    assert transport.writes == [HEAD % 2 + b"{}"]
    assert answer.response_complete and not transport.closed


async def test_a_stream_sends_its_head_with_the_first_events() -> None:
    answer, transport = cycle(keep_alive=False)
    await answer.send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream")]})
    await answer.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await answer.send({"type": "http.response.body", "body": b"data: 2\n\n"})
    first, second = transport.writes
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in first
    assert first.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert second == b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
    assert transport.closed  # keep-alive off: closed after the last write, as uvicorn does


async def test_a_long_body_follows_the_head_uncopied() -> None:
    answer, transport = cycle()
    body = b"x" * (MOST_COPIED + 1)
    await answer.send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await answer.send({"type": "http.response.body", "body": body})
    assert transport.writes == [HEAD % len(body), body]


def test_one_keep_alive_connection_serves_head_plain_and_streamed_answers(
        make_config: Callable[..., Config]) -> None:
    """On the real server: a HEAD answer (whose body uvicorn never writes) is not held back,
    and the answers after it on the same connection are whole."""
    sim = {"sim": {"deployments": [{"name": "s1", "backend": "simulated",
                                    "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}}
    chat = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    with gateway(make_config(sim)) as base_url:
        host, port = base_url.removesuffix("/v1").removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=5)
        connection.request("HEAD", "/healthz")
        head = connection.getresponse()
        assert head.status == 405 and head.read() == b""
        assert head.getheader("date") and head.getheader("server") is None  # no software named
        for stream in (False, True):
            connection.request("POST", "/v1/chat/completions",
                               body=json.dumps({**chat, "stream": stream}),
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            text = answer.read().decode()
            assert answer.status == 200
            assert text.endswith("data: [DONE]\n\n") if stream else json.loads(text)["choices"]
        connection.close()
