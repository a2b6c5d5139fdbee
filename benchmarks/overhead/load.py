"""Load from a separate process: wrk with a Lua script POSTing one chat request, and its figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from processes import BenchmarkError, Endpoint, pinned

WRK_REQUEST_TIMEOUT_S = 5
WRK_EXTRA_WALL_S = 30

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS_PER_S = re.compile(r"^\s*Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    #: Every percentile wrk printed (50, 75, 90, 99), in milliseconds.
    percentiles_ms: Mapping[float, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        """Answers that were not 2xx/3xx plus connect, read, write and timeout errors."""
        return self.non_2xx + self.socket_errors


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk_output(text: str) -> LoadResult:
    """The figures in the output of ``wrk --latency``; raises BenchmarkError if they are missing."""
    percentiles = {float(p): _to_ms(v, u) for p, v, u in _PERCENTILE.findall(text)}
    rate = _REQUESTS_PER_S.search(text)
    total = _TOTAL.search(text)
    if rate is None or total is None or 50.0 not in percentiles or 99.0 not in percentiles:
        raise BenchmarkError(f"cannot read wrk's output (was --latency given?):\n{text}")
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    return LoadResult(
        requests=int(total.group(1)),
        requests_per_s=float(rate.group(1)),
        p50_ms=percentiles[50.0],
        p99_ms=percentiles[99.0],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        percentiles_ms=percentiles,
    )


def _lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket string literal, with as many ``=`` as it takes."""
    level = 0
    while True:
        closing = f"]{'=' * level}]"
        # The first closing bracket must be the one we append (also when ``text`` ends in "]").
        if (text + closing).find(closing) == len(text):
            return f"[{'=' * level}[{text}{closing}"
        level += 1


def wrk_script(endpoint: Endpoint, request_body: Mapping[str, object]) -> str:
    """A wrk Lua script that POSTs the request body (with the endpoint's model) and headers."""
    body = json.dumps(endpoint.body(request_body), separators=(",", ":"))
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [
        f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}"
        for name, value in endpoint.headers.items()
    ]
    return "\n".join(lines) + "\n"


def wrk_binary() -> str | None:
    """The wrk executable, or None when it is not installed."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """wrk's version line (``wrk -v`` prints it and exits non-zero)."""
    binary = wrk_binary()
    if binary is None:
        return "wrk (not installed)"
    try:
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk (unknown version)"
    words = (done.stdout + done.stderr).split()
    return " ".join(words[:2]) if words else "wrk (unknown version)"


@dataclass(frozen=True)
class WrkLoad:
    """Runs wrk pinned to ``core``, POSTing ``request_body``, with at most ``threads`` threads;
    its Lua script goes in ``work_dir``."""

    work_dir: Path
    core: int
    request_body: Mapping[str, object]
    threads: int = 2

    def run(self, endpoint: Endpoint, concurrency: int, seconds: int) -> LoadResult:
        """Keep ``concurrency`` connections busy for ``seconds`` and return what wrk measured."""
        binary = wrk_binary()
        if binary is None:
            raise BenchmarkError("wrk is not installed: run benchmarks/overhead/setup.sh")
        script_path = self.work_dir / "request.lua"
        script_path.write_text(wrk_script(endpoint, self.request_body))
        argv = [
            binary,
            f"--threads={min(concurrency, self.threads)}",
            f"--connections={concurrency}",
            f"--duration={seconds}s",
            f"--timeout={WRK_REQUEST_TIMEOUT_S}s",
            "--latency",
            f"--script={script_path}",
            endpoint.url,
        ]
        try:
            finished = subprocess.run(
                pinned(argv, self.core),
                capture_output=True,
                text=True,
                timeout=seconds + WRK_EXTRA_WALL_S,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise BenchmarkError(f"wrk did not finish within {error.timeout} s") from None
        # wrk reports a bad script on stderr and still runs (with a GET): that is a failure.
        if finished.returncode != 0 or finished.stderr.strip():
            raise BenchmarkError(
                f"wrk failed with status {finished.returncode}:\n{finished.stderr}{finished.stdout}"
            )
        return parse_wrk_output(finished.stdout)
