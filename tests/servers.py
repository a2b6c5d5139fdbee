"""Real servers on free loopback ports, run in background threads, for tests and fixtures."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import urllib3
import uvicorn
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from switchgear.config import Config
from switchgear.gateway.server import uvicorn_config
from switchgear.store import open_store
from switchgear.store.records import RequestRecord

#: The role and database scripts/services makes; a password, so stock Debian's scram-sha-256 works.
POSTGRES_URL = os.environ.get("SWITCHGEAR_TEST_POSTGRES_URL",
                              "postgresql://switchgear:switchgear-test@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/0"
#: How long a redis-server of a test's own may take to start or stop.
REDIS_WAIT = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now (a server about to start takes it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections until the block ends: bound and never listening,
    so no server started meanwhile (on a port from ``free_port``) can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class BackgroundLoop:
    """An event loop in a thread, for servers that tests talk to with blocking clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run ``coroutine`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread, then close the loop (its self-pipe sockets with it)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@contextmanager
def aiohttp_server(app: web.Application, loop: BackgroundLoop) -> Iterator[str]:
    """Serve ``app`` on a free loopback port, on ``loop``; yield its base URL."""
    runner = web.AppRunner(app)
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop.run(start())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.run(runner.cleanup())


@contextmanager
def gateway_process(config: Config, directory: Path) -> Iterator[str]:
    """Run ``switchgear serve`` for ``config`` in a process of its own on a free port; yield its
    /v1 base URL; SIGTERM it at the end."""
    port = free_port()
    path = directory / f"switchgear-{port}.yaml"
    data = config.model_dump(mode="json")
    data["server"]["drain_grace_s"] = 0  # no load balancer to move away: stop at once
    path.write_text(yaml.safe_dump(data))
    with _serving(["serve", "--config", str(path), "--port", str(port), "--log-level",
                   "warning"], port, "/readyz") as base_url:
        yield base_url


@contextmanager
def simulator_process(*arguments: str) -> Iterator[str]:
    """Run ``switchgear simulate`` (with ``arguments``) in a process of its own on a free port;
    yield its /v1 base URL; SIGTERM it at the end. A test that measures its client's own event
    loop needs this: a simulator in the test's process holds the GIL for up to the interpreter's
    switch interval (5 ms) at a time, which the client would count as its own work."""
    port = free_port()
    with _serving(["simulate", "--port", str(port), *arguments], port, "/healthz") as base_url:
        yield base_url


@contextmanager
def _serving(arguments: Sequence[str], port: int, ready_path: str) -> Iterator[str]:
    """Run ``switchgear`` with ``arguments`` until the block ends; yield its /v1 base URL once
    ``ready_path`` answers 200."""
    process = subprocess.Popen([sys.executable, "-m", "switchgear", *arguments],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(base_url, ready_path):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"switchgear {arguments[0]} did not start: "
                                   + (process.stderr.read().decode() if process.stderr else ""))
            time.sleep(0.05)
        yield base_url + "/v1"
    finally:
        process.terminate()
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()


#: nginx balancing over gateway replicas, unprivileged, everything under one directory (as
#: benchmarks/overhead runs its upstream). A request whose connection a replica refuses (stopped,
#: killed) or does not accept in time goes to the next replica: the default ``proxy_next_upstream
#: error timeout``, which never resends a POST once it was sent to a replica, since a completion
#: may have run (and been billed) there. The gateway's drain makes that enough: a draining
#: replica's answers carry ``Connection: close``, so nginx stops reusing keep-alive connections to
#: it; once it stops accepting, new connections are refused, and retried elsewhere, and a request
#: sent on a connection it had accepted is still served for a second (closing it with the request
#: unread would reset it: the POST would fail, unretried). Connections the kernel had queued
#: when the replica stops accepting are served too: new handshakes are refused first (a SYN
#: dropped, resent a second later and refused), then the queue is emptied, then the socket closes.
NGINX_BALANCER = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream replicas {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
            add_header x-served-by $upstream_addr always;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx from Debian (in /usr/sbin, not on every PATH); scripts/setup --dev installs it."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                     else None)
    assert path is not None, "nginx is missing: run scripts/setup --dev (Debian: nginx)"
    return path


def balancer_config(prefix: Path, port: int, replicas: Sequence[int]) -> str:
    """An nginx.conf listening on ``port`` that balances over gateways on loopback ``replicas``
    (round robin), with its pid, logs and temp files under ``prefix``; each answer names the
    replicas it was sent to in ``x-served-by``."""
    servers = "\n".join(f"        server 127.0.0.1:{replica};" for replica in replicas)
    return NGINX_BALANCER.format(prefix=prefix, port=port, servers=servers)


@contextmanager
def load_balancer(replicas: Sequence[int], directory: Path) -> Iterator[str]:
    """nginx on a free loopback port balancing over the gateways on ``replicas``; yield its
    base URL; stopped at the end."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(balancer_config(directory, port, replicas))
    process = subprocess.Popen([nginx_binary(), "-p", str(directory), "-e",
                                str(directory / "error.log"), "-c", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start: "
                                   + (directory / "error.log").read_text(errors="replace"))
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def create_key(base_url: str, admin_key: str, **fields: Any) -> dict[str, Any]:
    """Create an API key over the admin API of the gateway at ``base_url``; the answer (the
    ``secret`` once, and the ``key``)."""
    response = urllib3.request("POST", base_url.removesuffix("/v1") + "/admin/keys",
                               json={"name": "test", **fields}, timeout=10,
                               headers={"Authorization": f"Bearer {admin_key}"})
    assert response.status == 201, response.data
    answer: dict[str, Any] = response.json()
    return answer


def serving_version(base_url: str, token: str | None = None) -> int:
    """The config version the gateway at ``base_url`` (its /v1 URL) serves now."""
    from switchgear.cli.admin_client import admin_call

    return int(admin_call(base_url.removesuffix("/v1"), "GET", "/admin/config", token)["serving"])


def wait_for_version(base_url: str, version: int, token: str | None = None,
                     timeout: float = 30) -> None:
    """Return once the gateway at ``base_url`` serves config ``version`` (or a newer one)."""
    deadline = time.monotonic() + timeout
    while serving_version(base_url, token) < version:
        if time.monotonic() > deadline:
            raise AssertionError(f"{base_url} did not serve config version {version} "
                                 f"within {timeout}s")
        time.sleep(0.05)


def break_glass(base_url: str, token: str | None, sections: dict[str, Any]) -> int:
    """Apply ``sections`` at once through the admin API (break-glass) and wait until the
    gateway serves them; the new config version."""
    from switchgear.cli.admin_client import admin_call

    change = admin_call(base_url.removesuffix("/v1"), "POST", "/admin/config/changes", token,
                        {"sections": sections, "break_glass": True})
    version = int(change["applied_version"])
    wait_for_version(base_url, version, token)
    return version


def _ready(base_url: str, path: str = "/readyz") -> bool:
    try:
        with urllib.request.urlopen(base_url + path, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def gateway(config: Config) -> Iterator[str]:
    """Run the gateway for ``config`` on a free port in a thread; yield its /v1 base URL."""
    port = free_port()
    config = config.model_copy(update={"server": config.server.model_copy(update={"port": port})})
    server = uvicorn.Server(uvicorn_config(config, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(60)


async def drop_schema(schema: str) -> None:
    """Drop a test's PostgreSQL schema and everything in it."""
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def fetch_records(url: str) -> list[RequestRecord]:
    """Every row of the store at ``url``."""

    async def fetch() -> list[RequestRecord]:
        store = open_store(url)
        await store.open()
        try:
            return await store.fetch()
        finally:
            await store.close()

    return asyncio.run(fetch())


def wait_for_record(url: str, request_id: str, timeout: float = 10) -> RequestRecord:
    """The row of ``request_id``, once the batched writer has written it."""
    deadline = time.monotonic() + timeout
    while True:
        for record in fetch_records(url):
            if record.request_id == request_id:
                return record
        if time.monotonic() > deadline:
            raise AssertionError(f"no record of {request_id} after {timeout}s")
        time.sleep(0.05)


def scrape(base_url: str) -> dict[str, float]:
    """Every sample of /metrics as ``name{label="value",...}`` → value (labels sorted)."""
    text = urllib3.request("GET", base_url.removesuffix("/v1") + "/metrics").data.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(value for key, value in samples.items()
               if key.startswith(name + "{") and all(w in key for w in wanted))


class OwnRedis:
    """A redis-server of the test's own, on a free port, that the test stops and starts."""

    def __init__(self, directory: Path, *options: str, password: str | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        #: More redis-server options (``--unixsocket PATH``, say).
        self.options = [*options, *(("--requirepass", password) if password else ())]
        self.password = password

    @property
    def pid(self) -> int:
        """The server's process id (to stop and continue it)."""
        return int((self.directory / "redis.pid").read_text())

    async def start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "yes",
            "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            "--pidfile", str(self.directory / "redis.pid"), *self.options,
        )
        assert await process.wait() == 0
        client = Redis(port=self.port, password=self.password)
        try:
            async with asyncio.timeout(REDIS_WAIT):
                while True:
                    try:
                        if await client.ping():
                            return
                    except OSError:
                        pass
                    except Exception:  # redis' ConnectionError while it starts listening
                        pass
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def __aenter__(self) -> OwnRedis:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        process = await asyncio.create_subprocess_exec(
            "redis-cli", "-p", str(self.port), *(("-a", self.password) if self.password else ()),
            "--no-auth-warning", "shutdown", "nosave",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await process.wait()
        async with asyncio.timeout(REDIS_WAIT):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                except OSError:
                    return
                writer.close()
                await writer.wait_closed()
                await asyncio.sleep(0.05)
