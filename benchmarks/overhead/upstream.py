"""The zero-latency upstream: nginx answering every chat completion with one fixed JSON body, and
``GET /v1/models`` as an OpenAI-compatible server does (a gateway's health check asks it); under
``/stream/v1`` the same answer streamed, as fixed server-sent events (nginx cannot branch on the
JSON body's ``stream`` field, so streamed targets are pointed at that base URL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from processes import BenchmarkError, Endpoint, Service, ServiceProcess, pinned

UPSTREAM_MODEL = "bench-upstream"

FIXED_COMPLETION: dict[str, object] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": UPSTREAM_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}

#: The streamed answer's text, one content delta each: 8 content events between the role event
#: and the finish event, then the usage event: 11 chat.completion.chunk events, then [DONE].
STREAM_DELTAS = ("Hello", " from", " the", " benchmark", " upstream", ",", " streamed", ".")
STREAM_PREFIX = "/stream"
#: What a streamed target's requests add: stream, with the usage event asked for.
STREAM_FIELDS: dict[str, object] = {"stream": True, "stream_options": {"include_usage": True}}


def stream_chunks() -> list[dict[str, object]]:
    """The streamed answer's chat.completion.chunk events: role, content deltas, finish, usage."""
    def chunk(choices: list[dict[str, object]], **extra: object) -> dict[str, object]:
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": UPSTREAM_MODEL, "choices": choices, **extra}

    def delta(content: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"index": 0, "delta": content, "finish_reason": finish}

    return [
        chunk([delta({"role": "assistant", "content": ""})]),
        *(chunk([delta({"content": text})]) for text in STREAM_DELTAS),
        chunk([delta({}, "stop")]),
        chunk([], usage=FIXED_COMPLETION["usage"]),
    ]


def stream_body() -> str:
    """The streamed answer as a text/event-stream body, ending in ``data: [DONE]``."""
    events = [json.dumps(chunk, separators=(",", ":")) for chunk in stream_chunks()]
    return "".join(f"data: {event}\n\n" for event in [*events, "[DONE]"])


NGINX_CONF_TEMPLATE = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 10000000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{body}';
        }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{models}';
        }}
        location = {stream}/v1/chat/completions {{
            default_type text/event-stream;
            return 200 '{events}';
        }}
        location = {stream}/v1/models {{
            default_type application/json;
            return 200 '{models}';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


def completion_json() -> str:
    """The fixed chat.completion answer, compact JSON."""
    return json.dumps(FIXED_COMPLETION, separators=(",", ":"))


def nginx_config(prefix: Path, port: int) -> str:
    """An nginx.conf serving the fixed completion for POST /v1/chat/completions on ``port``, and
    the streamed one for POST /stream/v1/chat/completions."""
    body, events = completion_json(), stream_body()
    if any(char in text for text in (body, events) for char in "'\\$"):
        raise BenchmarkError("the fixed answers must not contain ', \\ or $ (nginx string)")
    models = json.dumps({"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model",
                                                      "owned_by": "benchmark"}]},
                        separators=(",", ":"))
    # nginx turns \n in a quoted string into a newline.
    return NGINX_CONF_TEMPLATE.format(prefix=prefix, port=port, body=body, models=models,
                                      stream=STREAM_PREFIX, events=events.replace("\n", "\\n"))


def installed(name: str, system_path: str) -> str | None:
    """The executable ``name`` on the PATH, else at ``system_path`` (a Debian package's sbin is
    not on every user's PATH), or None when it is not installed."""
    return shutil.which(name) or (system_path if Path(system_path).exists() else None)


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return installed("nginx", "/usr/sbin/nginx")


class NginxUpstream:
    """nginx serving the fixed completion on a loopback port, pinned to one core."""

    def __init__(self, prefix: Path, port: int, core: int) -> None:
        self.prefix = prefix
        self.port = port
        self.core = core

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ending in /v1) that gateways are pointed at."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def stream_base_url(self) -> str:
        """The base URL whose chat completions are answered with the streamed events."""
        return f"http://127.0.0.1:{self.port}{STREAM_PREFIX}/v1"

    def base_url_for(self, streamed: bool) -> str:
        """The base URL a target asking for streamed (or whole) answers is pointed at."""
        return self.stream_base_url if streamed else self.base_url

    def endpoint(self, streamed: bool = False) -> Endpoint:
        """The upstream's chat completions endpoint (asked for streamed answers when
        ``streamed``), for measuring it directly."""
        return Endpoint(
            url=f"{self.base_url_for(streamed)}/chat/completions",
            model=UPSTREAM_MODEL,
            headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
            fields=STREAM_FIELDS if streamed else {},
        )

    def process(self) -> ServiceProcess:
        """The nginx process (not started yet), with its config written under ``prefix``."""
        binary = nginx_binary()
        if binary is None:
            raise BenchmarkError("nginx is not installed: run benchmarks/overhead/setup.sh")
        self.prefix.mkdir(parents=True, exist_ok=True)
        config_path = self.prefix / "nginx.conf"
        config_path.write_text(nginx_config(self.prefix, self.port))
        argv = [binary, "-p", str(self.prefix), "-e", str(self.prefix / "error.log"),
                "-c", str(config_path)]
        return ServiceProcess("nginx", pinned(argv, self.core), self.prefix / "nginx.log")


def redis_binary() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    return installed("redis-server", "/usr/bin/redis-server")


def redis_service(directory: Path, port: int, core: int) -> Service:
    """A redis-server of the benchmark's own on ``port``, pinned to ``core`` (the upstream's):
    a shared cache's Redis is a dependency like the upstream, so it must not share the gateway's
    core, as the machine's own Redis may. It keeps nothing on disk."""
    binary = redis_binary()
    if binary is None:
        raise BenchmarkError("redis-server is not installed: run scripts/services")
    directory.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(directory)]
    return Service(ServiceProcess("redis", pinned(argv, core), directory / "redis.log"), port)
