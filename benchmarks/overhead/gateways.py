"""The targets measured against the same upstream: the upstream itself, a featureless Python
proxy (the Python limit), Switchgear and two other gateways."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from processes import (
    Endpoint,
    ProbeAnswer,
    Service,
    ServiceProcess,
    free_port,
    pinned,
    wait_until_answers,
)
from upstream import STREAM_FIELDS, UPSTREAM_MODEL, NginxUpstream, redis_binary, redis_service

HERE = Path(__file__).resolve().parent
#: Where setup.sh installs granian (not in the lock: only the proxy-granian-server row needs it).
GRANIAN_DIRECTORY = HERE / ".work" / "granian"

GATEWAY_MODEL = "bench"
JSON_HEADERS: Mapping[str, str] = {
    "Content-Type": "application/json",
    "Authorization": "Bearer x",
}


@dataclass(frozen=True)
class Launch:
    """A started-to-be target: its server process (None for the upstream) and its endpoint."""

    process: ServiceProcess | None
    endpoint: Endpoint
    #: What the target needs beside it (its own Redis): started before it, stopped after it.
    services: tuple[Service, ...] = ()


class Target(Protocol):
    """Something that answers chat completions, measured in the benchmark."""

    @property
    def name(self) -> str:
        """The target's name in the table and in --only."""
        ...

    @property
    def startup_timeout_s(self) -> float:
        """How long to wait for its first 200 answer after starting it."""
        ...

    def missing(self) -> str | None:
        """Why this target cannot run on this machine (not installed), or None when it can."""
        ...

    def version(self) -> str:
        """The target's version, for the method paragraph."""
        ...

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """The process to start (pinned to ``core``, listening on ``port``) and its endpoint."""
        ...


@dataclass(frozen=True)
class Running:
    """A target that answers: how it was launched, its first 200 answer and how long that took."""

    launch: Launch
    answer: ProbeAnswer
    seconds_to_answer: float


@contextmanager
def running(target: Target, upstream: NginxUpstream, core: int, work_dir: Path,
            request_body: Mapping[str, object], announce: Callable[[str], None]
            ) -> Iterator[Running]:
    """``target`` launched on a free port pinned to ``core``, once it answers ``request_body``
    with 200 (BenchmarkError when it does not); its process is stopped on the way out."""
    launch = target.launch(upstream, free_port(), core, work_dir)
    try:
        for service in launch.services:
            service.start()
        if launch.process is not None:
            launch.process.start()
        body = json.dumps(launch.endpoint.body(request_body)).encode()
        started = time.monotonic()
        answer = wait_until_answers(launch.endpoint, body, launch.process,
                                    target.startup_timeout_s)
        yield Running(launch, answer, time.monotonic() - started)
    finally:
        if launch.process is not None:
            announce(f"[{target.name}] stopping")
            launch.process.stop()
        for service in launch.services:
            service.process.stop()


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def _first_line(argv: list[str], env: Mapping[str, str] | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                              env=env)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


@dataclass(frozen=True)
class DirectUpstream:
    """The upstream measured directly: the baseline each gateway's added latency is taken from
    (``streamed``: its streamed answer, the baseline of the streamed rows)."""

    name: str = "upstream"
    streamed: bool = False
    startup_timeout_s: float = 10.0

    def missing(self) -> str | None:
        """Never missing: the upstream is started for every run anyway."""
        return None

    def version(self) -> str:
        """nginx's version line."""
        return _first_line(["nginx", "-v"])

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """No process of its own: the running nginx is the target."""
        return Launch(process=None, endpoint=upstream.endpoint(self.streamed))


@dataclass(frozen=True)
class PythonProxy:
    """The featureless Python proxy (proxy.py: uvicorn + httptools + uvloop, an aiohttp
    keep-alive session, orjson), in front of the upstream: what a Python gateway cannot beat.
    ``streamed``: the requests ask for streams, relayed chunk by chunk."""

    python: Path
    name: str = "proxy"
    streamed: bool = False
    startup_timeout_s: float = 30.0
    #: The HTTP server it runs on (uvicorn, aiohttp or granian) and the client it forwards
    #: with (aiohttp, Switchgear's own or httpx2), to choose the gateway's by measurement.
    server: str = "uvicorn"
    client: str = "aiohttp"

    def missing(self) -> str | None:
        """Set when the venv's Python lacks what the proxy imports (granian: not installed by
        setup.sh)."""
        if not self.python.exists():
            return f"{self.python} does not exist"
        imports = "import aiohttp, httpx2, uvicorn, uvloop" + (
            ", granian" if self.server == "granian" else "")
        try:
            done = subprocess.run([str(self.python), "-c", imports], env=self._environment(),
                                  capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{self.python} did not run: {error}"
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return None if done.returncode == 0 else f"{self.python}: {last}"

    def version(self) -> str:
        """The versions of what the proxy is made of."""
        return _first_line([str(self.python), "-c", PROXY_VERSIONS], self._environment())

    def _environment(self) -> dict[str, str]:
        """The process's environment: granian from where setup.sh puts it, apart from the
        lock."""
        return _environment({"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(GRANIAN_DIRECTORY)})

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """``proxy.py`` pointed at the upstream (its streamed answers when ``streamed``)."""
        directory = work_dir / self.name
        directory.mkdir(parents=True, exist_ok=True)
        argv = [str(self.python), str(HERE / "proxy.py"), "--host", "127.0.0.1",
                "--port", str(port), "--upstream", upstream.base_url_for(self.streamed),
                "--model", UPSTREAM_MODEL, "--server", self.server, "--client", self.client]
        process = ServiceProcess(self.name, pinned(argv, core), directory / "server.log",
                                 env=self._environment(), cwd=directory)
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", GATEWAY_MODEL,
                            JSON_HEADERS, STREAM_FIELDS if self.streamed else {})
        return Launch(process, endpoint)


#: Prints the proxy's parts and their versions on one line.
PROXY_VERSIONS = (
    "import importlib.metadata as m\n"
    "names = ('uvicorn', 'httptools', 'uvloop', 'aiohttp', 'orjson', 'httpx2', 'granian')\n"
    "def version(name):\n"
    "    try:\n"
    "        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        return 'absent'\n"
    "print('proxy.py: ' + ', '.join(f'{n} {version(n)}' for n in names))\n"
)


def switchgear_config(upstream: NginxUpstream, database: Path, extra: str = "",
                      streamed: bool = False, admission: bool = True) -> str:
    """Switchgear's YAML config: one alias, one openai_http deployment on the upstream (its
    streamed answers when ``streamed``), request records to SQLite and metrics; with
    ``admission`` the admission path is on: an API key is required, per-key rate limits and a
    budget are taken and the priority gate is passed for every request (set high enough never
    to refuse), and the cache is on (in process); without it no key is asked for and the cache
    is off. ``extra`` adds YAML sections (a Redis cache, guards)."""
    admitting = (
        "auth: {mode: required}\n"
        "limits:\n"
        "  per_key: {rpm: 100000000, tpm: 1000000000000}\n"
        "  budgets: {per_key: {daily: 1000000000}}\n"
        "tiers: {capacity: 4096}\n"
    ) if admission else "auth: {mode: open}\ncache: {enabled: false}\n"
    return (
        "server: {host: 127.0.0.1, port: 8080}\n"
        f"{extra}"
        f'store: {{url: "sqlite:///{database}"}}\n'
        f"{admitting}"
        "models:\n"
        f"  {GATEWAY_MODEL}:\n"
        "    deployments:\n"
        "      - name: nginx\n"
        "        backend: openai_http\n"
        f"        url: {upstream.base_url_for(streamed)}\n"
        f"        model: {UPSTREAM_MODEL}\n"
        "        max_concurrency: 1024\n"
    )


@dataclass(frozen=True)
class InboundAPI:
    """An API clients call the gateway through, other than chat completions: its path, the
    benchmark's conversation in its shape, and how its key is sent (``key_header``: the key as
    is; Authorization: a Bearer token) with its other headers."""

    path: str
    request: Mapping[str, object]
    key_header: str = "Authorization"
    headers: Mapping[str, str] = field(default_factory=dict)

    def auth(self, key: str) -> dict[str, str]:
        """The headers carrying ``key`` and the API's own."""
        value = f"Bearer {key}" if self.key_header == "Authorization" else key
        return {"Content-Type": "application/json", self.key_header: value, **self.headers}


@dataclass(frozen=True)
class SwitchgearGateway:
    """Switchgear's `switchgear serve`, full path on: key, rate limits and budget checked,
    request records to SQLite, metrics."""

    executable: Path
    name: str = "switchgear"
    startup_timeout_s: float = 60.0
    #: YAML sections added to the config.
    extra: str = ""
    #: Fields every request adds: ``{"temperature": 0}`` makes them all cache hits after the
    #: first; without it they bypass the cache and reach the upstream.
    fields: Mapping[str, object] = field(default_factory=dict)
    #: The API the load comes in through; None: chat completions.
    api: InboundAPI | None = None
    #: The requests ask for streams (``stream_options.include_usage``), which the deployment
    #: answers with the upstream's streamed events.
    streamed: bool = False
    #: A command the server is started under (the profiler's launcher), the server's own
    #: command line after it.
    wrapper: tuple[str, ...] = ()
    #: Keys, limits, budget, tiers gate and cache on (``switchgear_config``); off, the requests
    #: carry no key.
    admission: bool = True
    #: The cache in a Redis of the row's own, pinned to the upstream's core (``redis_service``).
    redis_cache: bool = False

    def missing(self) -> str | None:
        """Set when the `switchgear` command is not installed in the venv, or the row's own
        Redis cannot be started."""
        if not self.executable.exists():
            return f"{self.executable} does not exist"
        if self.redis_cache and redis_binary() is None:
            return "redis-server is not installed (run scripts/services)"
        return None

    def version(self) -> str:
        """`switchgear --version`."""
        return _first_line([str(self.executable), "--version"])

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """`switchgear serve` with a generated config; a fresh SQLite file each run."""
        directory = work_dir / "switchgear"
        directory.mkdir(parents=True, exist_ok=True)
        database = directory / "bench.db"
        for stale in directory.glob("bench.db*"):
            stale.unlink()
        extra, services = self.extra, ()
        if self.redis_cache:
            redis = redis_service(directory / "redis", free_port(), upstream.core)
            extra += f'cache: {{url: "redis://127.0.0.1:{redis.port}/0", prefix: "sgbench:"}}\n'
            services = (redis,)
        config = directory / "switchgear.yaml"
        config.write_text(switchgear_config(upstream, database, extra, self.streamed,
                                            self.admission))
        argv = [*self.wrapper, str(self.executable), "serve", "--config", str(config),
                "--host", "127.0.0.1", "--port", str(port)]
        admin_key = "sg-bench-" + secrets.token_urlsafe(24)
        process = ServiceProcess(self.name, pinned(argv, core), directory / "server.log",
                                 env=_environment({"PYTHONUNBUFFERED": "1",
                                                   "SWITCHGEAR_ADMIN_KEY": admin_key}),
                                 cwd=directory)
        if self.api is None:
            key = {"Authorization": f"Bearer {admin_key}"} if self.admission else {}
            endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", GATEWAY_MODEL,
                                {**JSON_HEADERS, **key},
                                {**self.fields, **(STREAM_FIELDS if self.streamed else {})})
        else:
            endpoint = Endpoint(f"http://127.0.0.1:{port}{self.api.path}", GATEWAY_MODEL,
                                self.api.auth(admin_key), self.fields, self.api.request)
        return Launch(process, endpoint, services)


def litellm_config(upstream: NginxUpstream) -> str:
    """LiteLLM proxy's YAML config: one model mapped to `openai/<upstream model>` on the upstream."""
    return (
        "model_list:\n"
        f"  - model_name: {GATEWAY_MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: {upstream.base_url}\n"
        "      api_key: x\n"
    )


# Offline, quiet, no telemetry: the model cost map ships with the package; log errors only
# (which also turns off uvicorn's per-request access log).
LITELLM_ENV: Mapping[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class LiteLLMProxy:
    """LiteLLM's proxy (`litellm --config`), installed in its own venv, one worker."""

    venv: Path
    name: str = "litellm"
    startup_timeout_s: float = 120.0

    def missing(self) -> str | None:
        """Set when setup.sh has not installed LiteLLM."""
        binary = self.venv / "bin" / "litellm"
        return None if binary.exists() else f"{binary} does not exist (run setup.sh)"

    def version(self) -> str:
        """The installed litellm distribution's version."""
        found = sorted(self.venv.glob("lib/python*/site-packages/litellm-*.dist-info"))
        return found[-1].name.removesuffix(".dist-info") if found else "litellm (unknown)"

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """`litellm --config` with a generated config, one uvicorn worker, a fresh master key."""
        directory = work_dir / "litellm"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "litellm.yaml"
        config.write_text(litellm_config(upstream))
        argv = [str(self.venv / "bin" / "litellm"), "--config", str(config),
                "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        # LiteLLM refuses to start without a master key; clients send it as their bearer token.
        master_key = f"sk-{secrets.token_hex(32)}"
        environment = _environment({**LITELLM_ENV, "LITELLM_MASTER_KEY": master_key})
        process = ServiceProcess(self.name, pinned(argv, core), directory / "server.log",
                                 env=environment, cwd=directory)
        headers = {**JSON_HEADERS, "Authorization": f"Bearer {master_key}"}
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions",
                            GATEWAY_MODEL, headers)
        return Launch(process, endpoint)


@dataclass(frozen=True)
class PortkeyGateway:
    """Portkey's open-source gateway on Node.js, headless, provider and host given per request."""

    package_dir: Path
    name: str = "portkey"
    startup_timeout_s: float = 60.0

    @property
    def entry_point(self) -> Path:
        """The package's `bin`: build/start-server.js."""
        return self.package_dir / "build" / "start-server.js"

    def missing(self) -> str | None:
        """Set when setup.sh has not installed the gateway."""
        return None if self.entry_point.exists() else f"{self.entry_point} does not exist"

    def version(self) -> str:
        """@portkey-ai/gateway's version from its package.json."""
        manifest = json.loads((self.package_dir / "package.json").read_text())
        return f"@portkey-ai/gateway {manifest.get('version', 'unknown')}"

    def launch(self, upstream: NginxUpstream, port: int, core: int, work_dir: Path) -> Launch:
        """`node build/start-server.js --port=P --headless` in production mode."""
        directory = work_dir / "portkey"
        directory.mkdir(parents=True, exist_ok=True)
        argv = ["node", str(self.entry_point), f"--port={port}", "--headless"]
        process = ServiceProcess(self.name, pinned(argv, core), directory / "server.log",
                                 env=_environment({"NODE_ENV": "production"}), cwd=directory)
        headers = {
            **JSON_HEADERS,
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": upstream.base_url,
        }
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions",
                            UPSTREAM_MODEL, headers)
        return Launch(process, endpoint)
