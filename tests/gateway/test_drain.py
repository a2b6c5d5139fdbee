"""A `switchgear serve` process told to stop drains: /readyz answers 503 "draining" at once
while it keeps serving (every response closing its connection) for `server.drain_grace_s`; then
it refuses connections, finishes the requests and streams in flight, writes every record and
exits 0. A second signal ends the grace period early.

The upstream is a real simulator slow enough (seconds per answer) that requests and streams are
in flight when each signal lands; a request whose body the test holds back stays in flight for
as long as the test wants, which shows the port refusing while the process still serves it.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import urllib3
import yaml

from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import fetch_records, free_port, scrape

HELLO = [{"role": "user", "content": "Say hello"}]
#: Tokens each answer has: 40 at 60 ms a token keep a request in flight for about 2.5 s.
TOKENS = 40
SLOW = ModelOptions(slots=32, ttft_ms=100, tpot_ms=60, mean_output_tokens=TOKENS,
                    output_spread=0, load_factor=0, seed=1)
#: Connections the test queues while the gateway cannot accept them.
QUEUED = 20
#: Seconds after which a connection on loopback that has not been accepted nor refused has had
#: its SYN dropped.
HANDSHAKE_HELD_S = 0.2
#: Seconds to wait for anything that should happen soon (generous: the machine may be busy).
SOON = 60


@dataclass
class Replica:
    """A running `switchgear serve` process and where it listens and logs."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> urllib3.BaseHTTPResponse:
        """GET ``path`` on a new connection."""
        return urllib3.request("GET", self.url + path, retries=False, timeout=10)


@contextmanager
def replica(tmp_path: Path, upstream: RunningSimulator, store_url: str, grace: float,
            **server: float) -> Iterator[Replica]:
    """`switchgear serve` for one alias ``sim`` on ``upstream``, draining for ``grace`` seconds
    (``server``: more server settings); killed at the end if it is still running."""
    port = free_port()
    config = {
        "server": {"port": port, "drain_grace_s": grace, "keepalive_timeout_s": 120,
                   "body_timeout_s": 120, **server},
        "store": {"url": store_url, "flush_interval_ms": 100},
        "models": {"sim": {"deployments": [{"name": "upstream", "backend": "openai_http",
                                            "url": upstream.base_url, "model": "sim"}]}},
    }
    path = tmp_path / "switchgear.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchgear", "serve", "--config", str(path)],
            stdout=sink, stderr=subprocess.STDOUT)
    running = Replica(process, port, log)
    try:
        wait_until(lambda: _answers(running, "/readyz") == 200 or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(running: Replica, path: str) -> int | None:
    try:
        return running.get(path).status
    except urllib3.exceptions.HTTPError:
        return None


def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition`` holds; fail after SOON seconds."""
    deadline = time.monotonic() + SOON
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def refuses(port: int) -> bool:
    """Whether a new connection to ``port`` is refused (nobody listens). Not yet while the
    gateway, about to stop accepting, holds new handshakes back: the connection is not refused
    until its SYN is sent again, a second later."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_HELD_S).close()
    except ConnectionRefusedError:
        return True
    except TimeoutError:
        return False
    return False


def received(upstream: RunningSimulator) -> int:
    """Requests the simulator has taken so far: running, waiting for a slot, or answered."""
    model = upstream.state.model
    return model.busy_slots + model.queue_depth + model.requests_served


@dataclass
class Answer:
    """What a client got: the request id, and the Connection header of the response."""

    request_id: str
    connection: str | None


def ask(sdk: openai.OpenAI, stream: bool) -> Answer:
    """One chat completion through the official client, checked to be whole: a stream ends
    with its usage chunk and then [DONE], an answer has its finish reason."""
    raw = sdk.chat.completions.with_raw_response.create(
        model="sim", messages=HELLO, max_tokens=TOKENS, stream=stream,
        **({"stream_options": {"include_usage": True}} if stream else {}))
    if stream:
        chunks = list(raw.parse())
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] is not None
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == TOKENS
    else:
        assert raw.parse().choices[0].finish_reason is not None
    return Answer(raw.headers["x-request-id"], raw.headers.get("connection"))


def send_in_flight(pool: ThreadPoolExecutor, sdk: openai.OpenAI, upstream: RunningSimulator
                   ) -> list[Future[Answer]]:
    """Two streams and two plain requests, returned once the upstream has all four."""
    before = received(upstream)
    answers = [pool.submit(ask, sdk, stream) for stream in (True, False, True, False)]
    wait_until(lambda: received(upstream) >= before + 4)
    return answers


class HeldRequest:
    """A chat completion sent whole but for its last byte: in flight until ``finish``. With
    ``sent_nothing``, nothing is sent before ``finish``: the connection is idle until then (a
    balancer's, just opened or kept alive)."""

    def __init__(self, running: Replica, sent_nothing: bool = False) -> None:
        request = chat_request()
        split = 0 if sent_nothing else len(request) - 1
        self.rest = request[split:]
        self.sock = socket.create_connection(("127.0.0.1", running.port), timeout=SOON)
        self.sock.sendall(request[:split])
        # Answered after it on a connection accepted after it: the server has taken it.
        assert running.get("/healthz").status == 200

    def finish(self) -> tuple[int, str, str | None]:
        """Send the rest; the status, request id and Connection header of the answer, once the
        server has closed the connection after it."""
        with self.sock:
            self.sock.sendall(self.rest)
            return read_answer(self.sock)


def chat_request() -> bytes:
    """A chat completion of two tokens, as a client sends it on the wire."""
    body = json.dumps({"model": "sim", "messages": HELLO, "max_tokens": 2}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body))


def read_answer(sock: socket.socket) -> tuple[int, str, str | None]:
    """The status, request id and Connection header of the answer on ``sock``, once the server
    has closed the connection after it."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    assert sock.recv(1) == b"", "the server kept the connection open"
    return response.status, response.headers["x-request-id"], response.headers["connection"]


def keep_alive_ends(port: int) -> str | None:
    """GET /healthz on a keep-alive connection; its Connection header, once the server has
    closed the connection after the answer (fails if it keeps it open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200
        response.read()
        assert sock.recv(1) == b"", "the server kept the connection open"
        connection: str | None = response.headers["connection"]
        return connection


def stored(store_url: str, answers: list[Answer]) -> dict[str, int]:
    """Request id → status of the records the store holds for ``answers``."""
    rows = {row.request_id: row.status for row in fetch_records(store_url)}
    return {a.request_id: rows[a.request_id] for a in answers if a.request_id in rows}


def test_sigterm_drains_and_a_second_signal_ends_the_grace(
        tmp_path: Path, store_url: str, simulators: Callable[..., RunningSimulator]) -> None:
    upstream = simulators(SLOW)
    with (replica(tmp_path, upstream, store_url, grace=600) as running,
          openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0) as sdk,
          ThreadPoolExecutor(8) as pool):
        before = send_in_flight(pool, sdk, upstream)
        running.process.send_signal(signal.SIGTERM)

        readyz = running.get("/readyz")  # the first request after the signal
        assert (readyz.status, readyz.json()) == (503, {"status": "draining"})
        assert running.get("/healthz").status == 200
        assert keep_alive_ends(running.port) == "close"
        assert scrape(running.url)["switchgear_draining{}"] == 1
        during = send_in_flight(pool, sdk, upstream)
        held = HeldRequest(running)
        wait_until(lambda: "draining: not ready; serving 600 more seconds" in
                   running.log.read_text())

        running.process.send_signal(signal.SIGINT)  # Ctrl+C twice: the grace ends now
        wait_until(lambda: refuses(running.port))
        assert running.process.poll() is None  # still serving what it has
        status, held_id, connection = held.finish()
        assert (status, connection) == (200, "close")
        answers = [future.result(SOON) for future in [*before, *during]]
        assert running.process.wait(SOON) == 0

    assert all(answer.connection == "close" for answer in answers[len(before):])
    answers.append(Answer(held_id, connection))
    assert stored(store_url, answers) == {answer.request_id: 200 for answer in answers}
    log = running.log.read_text()
    for line in ("second stop signal: skipping the last", "stopped accepting; waiting for",
                 f"records flushed ({len(answers)} written)"):
        assert line in log, log


def test_a_request_sent_as_the_server_stops_accepting_is_served(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    """A balancer that does not read /readyz (nginx) may send a request on a connection in the
    very moment the replica stops accepting: the request is served, not reset unanswered (a
    balancer does not send a POST again)."""
    upstream = simulators(SLOW)
    store_url = f"sqlite:///{tmp_path}/records.db"
    with (replica(tmp_path, upstream, store_url, grace=0.2) as running,
          openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0) as sdk,
          ThreadPoolExecutor(4) as pool):
        in_flight = send_in_flight(pool, sdk, upstream)  # keep the process up a while
        idle = HeldRequest(running, sent_nothing=True)
        running.process.send_signal(signal.SIGTERM)

        wait_until(lambda: refuses(running.port))
        status, request_id, connection = idle.finish()
        assert (status, connection) == (200, "close")
        answers = [future.result(SOON) for future in in_flight]
        assert running.process.wait(SOON) == 0

    answers.append(Answer(request_id, connection))
    assert stored(store_url, answers) == {answer.request_id: 200 for answer in answers}


def test_connections_queued_as_the_server_stops_accepting_are_served(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    """The kernel completes handshakes while the gateway's loop is busy (here: stopped), and a
    balancer sends its request on each at once. Those connections wait in the accept queue; a
    listening socket closed over them would reset them, and the balancer would not send the
    POSTs again. They are served; a connection begun after the gateway stopped taking them is
    refused (a balancer tries another replica), not reset once sent."""
    upstream = simulators(SLOW)
    store_url = f"sqlite:///{tmp_path}/records.db"
    with replica(tmp_path, upstream, store_url, grace=0.2) as running, ExitStack() as sockets:
        running.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining: not ready" in running.log.read_text())
        running.process.send_signal(signal.SIGSTOP)
        try:
            queued = [sockets.enter_context(socket.create_connection(("127.0.0.1", running.port),
                                                                     timeout=SOON))
                      for _ in range(QUEUED)]
            for sock in queued:
                sock.sendall(chat_request())
            time.sleep(0.5)  # the grace period ends while the process is stopped
        finally:
            running.process.send_signal(signal.SIGCONT)
        answers = []
        for sock in queued:
            status, request_id, connection = read_answer(sock)
            assert (status, connection) == (200, "close")
            answers.append(Answer(request_id, connection))
        assert refuses(running.port)
        assert running.process.wait(SOON) == 0

    assert stored(store_url, answers) == {answer.request_id: 200 for answer in answers}


def test_the_grace_period_ends_by_itself(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    upstream = simulators(SLOW)
    store_url = f"sqlite:///{tmp_path}/records.db"
    with (replica(tmp_path, upstream, store_url, grace=0.5) as running,
          openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0) as sdk,
          ThreadPoolExecutor(4) as pool):
        in_flight = send_in_flight(pool, sdk, upstream)
        held = HeldRequest(running)
        running.process.send_signal(signal.SIGTERM)

        wait_until(lambda: refuses(running.port))
        assert running.process.poll() is None
        status, held_id, _ = held.finish()
        assert status == 200
        answers = [future.result(SOON) for future in in_flight]
        assert running.process.wait(SOON) == 0

    answers.append(Answer(held_id, None))
    assert stored(store_url, answers) == {answer.request_id: 200 for answer in answers}
    log = running.log.read_text()
    assert "draining: not ready; serving 0.5 more seconds" in log, log
    assert f"records flushed ({len(answers)} written)" in log, log


def test_requests_cut_off_at_the_shutdown_timeout_have_their_records(
        tmp_path: Path, simulators: Callable[..., RunningSimulator]) -> None:
    upstream = simulators(SLOW)
    store_url = f"sqlite:///{tmp_path}/records.db"
    with (replica(tmp_path, upstream, store_url, grace=0, shutdown_timeout_s=0.2) as running,
          openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0) as sdk,
          ThreadPoolExecutor(4) as pool):
        in_flight = send_in_flight(pool, sdk, upstream)
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(SOON) == 0
        failures = [future.exception(SOON) for future in in_flight]

    # Each answer was cut short (the simulator takes seconds), and each request has its row.
    assert all(isinstance(failure, openai.APIError) for failure in failures), failures
    rows = fetch_records(store_url)
    # recorded as cut off by the server (503), not as clients that left (499)
    assert [(row.status, row.error_type) for row in rows] == [(503, "ShutDown")] * len(in_flight)
    log = running.log.read_text()
    assert f"{len(in_flight)} requests still running after 0.2s" in log, log
    assert f"records flushed ({len(in_flight)} written)" in log, log
