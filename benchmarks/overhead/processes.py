"""Child processes of the benchmark: started pinned to one CPU core, stopped with their group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

STOP_GRACE_S = 15.0
LOG_TAIL_BYTES = 2_000


class BenchmarkError(Exception):
    """A target could not be started, did not answer, or the load tool failed."""


def stop_everything_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every process a benchmark started is stopped on the
    way out (its context managers and ``finally`` blocks run), none left orphaned."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pinned(argv: Sequence[str], core: int) -> list[str]:
    """``argv`` prefixed with ``taskset`` so that it (and its threads and children) run on ``core``."""
    return ["taskset", "-c", str(core), *argv]


def tail(path: Path, size: int = LOG_TAIL_BYTES) -> str:
    """The last ``size`` bytes of a log file, as text ('' when the file is missing)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-size:].decode("utf-8", errors="replace")


def _stat_fields(stat: Path) -> list[str] | None:
    """The fields of a /proc stat file after the parenthesised command name (which may itself
    hold spaces): state is [0], pgrp [2], utime [11], stime [12]; None when it has gone."""
    try:
        text = stat.read_text()
    except OSError:
        return None  # the process or thread ended while we looked
    return text[text.rindex(")") + 2 :].split()


def _group_members(group: int) -> list[Path]:
    """The /proc directories of the live processes in process group ``group``."""
    return [stat.parent for stat in Path("/proc").glob("[0-9]*/stat")
            if (fields := _stat_fields(stat)) is not None and int(fields[2]) == group]


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of the live processes in process group ``group`` (Linux /proc)."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    total_ticks = 0
    for member in _group_members(group):
        fields = _stat_fields(member / "stat")
        if fields is not None:
            total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / ticks_per_s


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each live thread of process ``pid``, by thread id (the main
    thread's id is ``pid``)."""
    ticks_per_s = os.sysconf("SC_CLK_TCK")
    threads = {}
    for stat in Path(f"/proc/{pid}/task").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None:
            threads[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / ticks_per_s
    return threads


def group_rss_bytes(group: int) -> int:
    """Resident memory (VmRSS) of the live processes in process group ``group``, summed."""
    total_kib = 0
    for member in _group_members(group):
        try:
            status = (member / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])  # "VmRSS:   123456 kB"
    return total_kib * 1024


@dataclass
class ServiceProcess:
    """A long-running child (a server) in its own process group, with output in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the process; its stdout and stderr go to ``log_path``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The process id (also its process group's id); the process must have been started."""
        if self._process is None:
            raise BenchmarkError(f"{self.name} was not started")
        return self._process.pid

    def rss_bytes(self) -> int:
        """Resident memory of every live process in the process group (0 before the start)."""
        return 0 if self._process is None else group_rss_bytes(self._process.pid)

    def exit_code(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every live process in the process group."""
        if self._process is None:
            return 0.0
        return group_cpu_seconds(self._process.pid)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait ``grace_s``, then SIGKILL what is left."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self._signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=grace_s)
        # Workers the server forked may outlive it in the group; they go too.
        self._signal_group(process.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Endpoint:
    """Where a target answers chat completions (or the same conversation in another API), what
    model name to ask for, and which headers."""

    url: str
    model: str
    headers: Mapping[str, str]
    #: Body fields this target's requests add (temperature 0 makes them cacheable).
    fields: Mapping[str, object] = field(default_factory=dict)
    #: The request in this endpoint's API's shape, instead of the benchmark's chat body.
    request: Mapping[str, object] | None = None

    def body(self, request_body: Mapping[str, object]) -> dict[str, object]:
        """The benchmark's request body (or this endpoint's own) with this endpoint's model
        name and fields in it."""
        return {**(self.request or request_body), **self.fields, "model": self.model}


@dataclass(frozen=True)
class ProbeAnswer:
    """One HTTP answer: status and body (status 0 when no connection could be made)."""

    status: int
    body: bytes


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> ProbeAnswer:
    """POST ``body`` to ``url``; connection failures come back as status 0."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return ProbeAnswer(response.status, response.read())
    except urllib.error.HTTPError as error:
        return ProbeAnswer(error.code, error.read())
    except (urllib.error.URLError, OSError) as error:
        return ProbeAnswer(0, str(error).encode())


def wait_until_answers(
    endpoint: Endpoint,
    body: bytes,
    process: ServiceProcess | None,
    timeout_s: float,
) -> ProbeAnswer:
    """Poll ``endpoint`` until it answers 200, the process dies, or ``timeout_s`` passes.

    Returns the 200 answer; raises BenchmarkError with the last answer and the log tail otherwise.
    """
    deadline = time.monotonic() + timeout_s
    last = ProbeAnswer(0, b"not tried")
    while time.monotonic() < deadline:
        if process is not None and process.exit_code() is not None:
            raise BenchmarkError(
                f"{process.name} exited with status {process.exit_code()} before answering;"
                f" log {process.log_path}:\n{tail(process.log_path)}"
            )
        last = post(endpoint.url, body, endpoint.headers, timeout_s=5.0)
        if last.status == 200:
            return last
        time.sleep(0.25)
    log = f"; log {process.log_path}:\n{tail(process.log_path)}" if process else ""
    raise BenchmarkError(
        f"{endpoint.url} did not answer 200 within {timeout_s:.0f} s; last answer: status"
        f" {last.status}: {last.body[:500].decode('utf-8', errors='replace')}{log}"
    )


@dataclass
class Service:
    """A process a target needs beside it (its own Redis), and the port it listens on."""

    process: ServiceProcess
    port: int

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it and wait until its port takes connections (BenchmarkError when it dies or
        ``timeout_s`` passes first)."""
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.exit_code() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1.0):
                return
            time.sleep(0.05)
        raise BenchmarkError(f"{self.process.name} did not listen on port {self.port}; log"
                             f" {self.process.log_path}:\n{tail(self.process.log_path)}")
