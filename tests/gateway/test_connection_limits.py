"""Connection-level limits (slowloris) and /readyz naming every dependency, Redis included.

Real sockets on loopback: attackers connect from other loopback addresses (127.0.0.2, ...) so
that the per-address bound can tell them from the honest client at 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import urllib3

from switchgear.config import Config

from servers import REDIS_URL, BackgroundLoop, free_port, gateway, scrape, total

SIM = {"sim": {"deployments": [{"name": "s1", "backend": "simulated",
                                "simulated": {"ttft_ms": 1, "tpot_ms": 0}}]}}
CHAT = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def half_request(source: str, port: int) -> socket.socket | None:
    """A connection from ``source`` that sends half a request line and then nothing; None when
    the gateway refused it at once."""
    sock = socket.socket()
    try:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"POST /v1/chat/compl")
    except OSError:
        sock.close()
        return None
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset, after any answer) within ``within`` s."""
    sock.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def ok(root: str) -> None:
    """/healthz and a chat completion both answer 200, promptly."""
    assert urllib3.request("GET", root + "/healthz", timeout=5, retries=False).status == 200
    chat = urllib3.request("POST", root + "/v1/chat/completions", json=CHAT, timeout=5,
                           retries=False)
    assert chat.status == 200, chat.data


@pytest.fixture
def limited(make_config: Callable[..., Config]) -> Iterator[tuple[str, int]]:
    """A gateway with small, quick connection limits; its root URL and port."""
    config = make_config(SIM, max_connections=60, max_connections_per_client=20,
                         header_timeout_s=0.5, body_timeout_s=0.5)
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        yield root, int(root.rsplit(":", 1)[1])


def test_one_address_gets_its_bound_and_slow_headers_are_cut_off(
        limited: tuple[str, int]) -> None:
    root, port = limited
    with ExitStack() as stack:
        held = [stack.enter_context(s) for s in
                (half_request("127.0.0.2", port) for _ in range(200)) if s is not None]
        # Beyond 20 from 127.0.0.2, connections are closed at once: by the gateway or refused.
        open_now = [s for s in held if not closed_by_server(s, 0.05)]
        assert len(open_now) <= 20
        ok(root)  # the honest client at 127.0.0.1 is served meanwhile
        # The slow ones are closed after the header timeout, with a 408 when nothing was answered.
        start = time.monotonic()
        assert all(closed_by_server(s, 3) for s in open_now)
        assert time.monotonic() - start < 2.5
        ok(root)
    counts = scrape(root)
    assert total(counts, "switchgear_connections_refused_total") >= len(held) - 20
    assert total(counts, "switchgear_connections_timed_out_total") >= len(open_now)
    assert total(counts, "switchgear_connections_open") < 20


def test_a_full_gateway_evicts_connections_still_sending_headers(
        limited: tuple[str, int]) -> None:
    root, port = limited
    with ExitStack() as stack:
        for n in range(2, 6):  # 4 addresses x 20 = 80 > max_connections 60
            for _ in range(20):
                sock = half_request(f"127.0.0.{n}", port)
                if sock is not None:
                    stack.enter_context(sock)
        ok(root)
        assert total(scrape(root), "switchgear_connections_evicted_total") >= 20


def test_a_header_timeout_answers_408(limited: tuple[str, int]) -> None:
    _, port = limited
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == {
            "message": "The request's headers did not arrive in time.",
            "type": "invalid_request_error", "param": None, "code": "request_timeout"}
        assert closed_by_server(sock, 2)


def test_a_kept_alive_connection_slow_with_its_next_headers_gets_408(
        limited: tuple[str, int]) -> None:
    _, port = limited
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - start < 2.5  # the header timeout (0.5 s), not keep-alive's
        assert closed_by_server(sock, 2)


def test_a_slow_body_is_cut_off(limited: tuple[str, int]) -> None:
    root, port = limited
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"mo")
        start = time.monotonic()
        assert closed_by_server(sock, 3)
        assert time.monotonic() - start < 2.5
    ok(root)


def test_keep_alive_still_serves_several_requests(limited: tuple[str, int]) -> None:
    root, _ = limited
    with urllib3.PoolManager(maxsize=1) as pool:
        for _ in range(5):
            assert pool.request("GET", root + "/healthz", timeout=5, retries=False).status == 200


@contextmanager
def redis_forwarder(loop: BackgroundLoop) -> Iterator[tuple[int, Callable[[bool], None]]]:
    """A loopback port that forwards to the test Redis while switched on (else: nothing listens
    there); its port and the switch."""
    port = free_port()
    target = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    servers: list[asyncio.Server] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target[0], int(target[1]))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def start() -> None:
        servers.append(await asyncio.start_server(forward, "127.0.0.1", port))

    async def stop() -> None:
        while servers:
            server = servers.pop()
            server.close()
            if hasattr(server, "close_clients"):
                server.close_clients()

    def switch(on: bool) -> None:
        loop.run(start() if on else stop())

    try:
        yield port, switch
    finally:
        loop.run(stop())


@pytest.mark.parametrize("section", ["limits", "cache"])
def test_readyz_names_redis_while_it_is_down(
        make_config: Callable[..., Config], background: BackgroundLoop, section: str) -> None:
    with redis_forwarder(background) as (port, switch):
        url = f"redis://127.0.0.1:{port}/0"
        data: dict[str, Any] = {**make_config(SIM).model_dump(mode="json")}
        data[section] = ({"state_url": url, "state_prefix": f"sg-ready-{port}:"}
                         if section == "limits" else {"url": url, "prefix": f"sg-ready-{port}:"})
        config = Config.model_validate(data)
        name = "limits.state_url" if section == "limits" else "cache.url"
        with gateway(config) as base_url:
            root = base_url.removesuffix("/v1")
            down = urllib3.request("GET", root + "/readyz", timeout=10, retries=False)
            assert down.status == 503, down.data
            report = json.loads(down.data)
            assert report["status"] == "unready" and report["redis"][name] != "ok"
            assert str(port) not in down.data.decode()  # named by setting, the URL not shown
            switch(True)
            up = urllib3.request("GET", root + "/readyz", timeout=10, retries=False)
            assert up.status == 200, up.data
            assert json.loads(up.data)["redis"] == {name: "ok"}
            switch(False)
