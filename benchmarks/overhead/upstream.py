"""The zero-latency upstream: nginx answering every chat completion with one fixed JSON body, and
``GET /v1/models`` as an OpenAI-compatible server does (a gateway's health check asks it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from processes import BenchmarkError, Endpoint, ServiceProcess, pinned

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
    """An nginx.conf serving the fixed completion for POST /v1/chat/completions on ``port``."""
    body = completion_json()
    if any(char in body for char in "'\\$"):
        raise BenchmarkError("the fixed completion must not contain ', \\ or $ (nginx string)")
    models = json.dumps({"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model",
                                                      "owned_by": "benchmark"}]},
                        separators=(",", ":"))
    return NGINX_CONF_TEMPLATE.format(prefix=prefix, port=port, body=body, models=models)


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


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

    def endpoint(self) -> Endpoint:
        """The upstream's chat completions endpoint, for measuring it directly."""
        return Endpoint(
            url=f"{self.base_url}/chat/completions",
            model=UPSTREAM_MODEL,
            headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
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
