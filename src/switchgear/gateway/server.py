"""Run the gateway under uvicorn (uvloop + httptools, the fastest pair we measured), with
connection-level limits (gateway/connections.py) and the open-file limit raised.

The listening socket is bound first, before the app starts (gateway/listener.py).

SIGTERM or SIGINT drains the replica: /readyz answers 503 at once while it keeps listening and
serving for ``server.drain_grace_s`` (load balancers take it out meanwhile); then it stops
accepting (new handshakes refused first, the connections already queued served: see
gateway/listener.py), gives what is in flight up to ``server.shutdown_timeout_s`` to finish,
writes every record and exits 0. A second signal ends the grace period at once; one more SIGINT
after that stops waiting for what is in flight.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import resource
import signal
import socket
import time
from types import FrameType

import uvicorn

from switchgear.config import Config
from switchgear.gateway.app import GatewayApp, build_app
from switchgear.gateway.connections import ConnectionGuard, guarded_protocol
from switchgear.gateway.listener import listen, queued, refuse_handshakes
from switchgear.gateway.state import AppState
from switchgear.pipeline.record import SHUTDOWN

log = logging.getLogger("switchgear.gateway")

#: Seconds the requests cut off at ``server.shutdown_timeout_s`` have to unwind (each is
#: recorded as it does) before uvicorn stops waiting for them and the app stops anyway.
UNWIND_SECONDS = 5
#: Seconds for the handshakes under way when the gateway stops accepting to complete: a round
#: trip between a balancer and its replicas, with room.
HANDSHAKE_S = 0.05
#: Seconds at most for the accept queue to empty before the listening sockets close anyway.
QUEUE_WAIT_S = 1.0
#: Seconds between two readings of the accept queue (the kernel gives no event when it empties).
QUEUE_POLL_S = 0.005


class GatewayServer(uvicorn.Server):
    """uvicorn's server on sockets bound beforehand, saying where it listens once started (as
    uvicorn itself does only for sockets it binds), that drains its GatewayApp when told to
    stop (the module's docstring says how) and exits without re-raising the signal."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        if not isinstance(config.app, GatewayApp):
            raise TypeError("GatewayServer serves a GatewayApp")
        self.gateway = config.app
        #: SIGTERM/SIGINT received so far.
        self.stop_signals = 0
        #: When (time.monotonic) the grace period ends; None until the first tick of the drain.
        self.grace_ends: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first signal drains; a second one ends the grace period; once stopping, SIGINT
        stops waiting for requests in flight (uvicorn's force exit). Only sets flags: it runs
        between any two bytecodes of the event loop's thread."""
        self.stop_signals += 1
        if self.should_exit:
            self.force_exit = self.force_exit or sig == signal.SIGINT
        elif self.stop_signals == 1 and self.started:
            self.gateway.drain()
        else:  # a second signal, or one before the app has started
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick (every 0.1 s), which also starts and ends the drain's grace period."""
        if self.gateway.draining:
            now = time.monotonic()
            if self.grace_ends is None:
                grace = self.gateway.state.config.server.drain_grace_s
                self.grace_ends = now + grace
                log.info("draining: not ready; serving %g more seconds (Ctrl+C or SIGTERM "
                         "again to stop sooner)", grace)
            if self.should_exit and now < self.grace_ends:
                log.info("second stop signal: skipping the last %.1f seconds of the grace period",
                         self.grace_ends - now)
            elif now >= self.grace_ends:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting, let what is in flight finish (for ``server.shutdown_timeout_s`` at
        most, then cut it off and let it unwind), then stop the app, which writes every record;
        also after a forced exit, which uvicorn lets skip the app's shutdown (the requests
        still running are cancelled first)."""
        if not self.force_exit:
            await self._serve_the_queue(sockets or [])
        timeout = self.gateway.state.config.server.shutdown_timeout_s
        log.info("stopped accepting; waiting for %d requests (%gs at most)",
                 len(self.server_state.tasks), timeout)
        # Not uvicorn's own timeout: it cancels the requests and stops the app at once, before
        # they have unwound and handed over their records.
        cut_off = asyncio.get_running_loop().call_later(timeout, self._cut_off, timeout)
        try:
            await super().shutdown(sockets)
        finally:
            cut_off.cancel()
        if self.force_exit:
            for task in self.server_state.tasks:
                task.cancel()
            await self.lifespan.shutdown()

    async def _serve_the_queue(self, sockets: list[socket.socket]) -> None:
        """Before the listening sockets close: refuse new handshakes, and go on accepting until
        the connections the kernel has already taken on are in (gateway/listener.py says why),
        for ``QUEUE_WAIT_S`` at most."""
        closing = [sock for sock in sockets if refuse_handshakes(sock)]
        if not closing:
            return
        await asyncio.sleep(HANDSHAKE_S)
        for _ in range(round(QUEUE_WAIT_S / QUEUE_POLL_S)):
            if self.force_exit or not any(queued(sock) for sock in closing):
                return
            await asyncio.sleep(QUEUE_POLL_S)

    def _cut_off(self, timeout: float) -> None:
        """Cancel the requests still running ``timeout`` seconds after the server stopped
        accepting; uvicorn waits on until they have unwound."""
        running = list(self.server_state.tasks)
        if running:
            log.error("%d requests still running after %gs (server.shutdown_timeout_s): "
                      "cutting them off", len(running), timeout)
        for task in running:
            task.cancel(SHUTDOWN)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the app and listen on ``sockets``; then log their addresses. What start-up
        built lives as long as the process: it is put out of the garbage collector's reach, so
        a full collection walks only what came after (the ~120,000 start-up objects cost 53 ms
        a pass on benchmarks/overhead's gateway)."""
        await super().startup(sockets)
        if self.started:
            gc.freeze()
            for sock in sockets or ():
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("listening on http://%s:%d (Ctrl+C to stop)", shown, port)


def uvicorn_config(config: Config, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn settings for ``config``: fast loop and parser, no access log on the hot path,
    and the connection limits of ``config.server`` (the total clamped to half the open-file
    limit, leaving the rest for the store, Redis and upstream connections)."""
    server = config.server
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    most = server.max_connections
    if soft != resource.RLIM_INFINITY and most > soft // 2:
        most = max(soft // 2, 1)
        log.warning("server.max_connections %d is over half the open-file limit (%d); "
                    "at most %d connections will be open at once", server.max_connections,
                    soft, most)
    state = AppState.build(config)
    guard = ConnectionGuard(server, most)
    state.metrics.watch_connections(guard)
    return uvicorn.Config(
        build_app(state),
        host=server.host,
        port=server.port,
        loop="uvloop",
        http=guarded_protocol(guard),
        timeout_keep_alive=math.ceil(server.keepalive_timeout_s),
        lifespan="on",
        access_log=False,
        # scope["client"] is the connection's peer (the audit trail's source, its throttle):
        # uvicorn's default trusts X-Forwarded-For from loopback, which would let any local
        # client forge it; off, no middleware runs per request either
        proxy_headers=False,
        server_header=False,  # no "server: uvicorn" telling every caller what runs here
        log_level=log_level,
        # GatewayServer cuts requests off at shutdown_timeout_s; this is uvicorn's backstop
        timeout_graceful_shutdown=math.ceil(server.shutdown_timeout_s) + UNWIND_SECONDS,
        backlog=4096,
    )


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit (best effort): every
    connection is one, and the default soft limit (often 1024) is soon spent."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, error)


def serve(config: Config, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM, then drain (the module's docstring says how): requests in
    flight finish and every record is written.
    CannotListen before anything starts when the address cannot be had; SystemExit(3) when
    the app failed to start."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise_open_file_limit()
    with listen(config.server.host, config.server.port) as sock:
        server = GatewayServer(uvicorn_config(config, log_level))
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(3)
