"""Run the gateway under uvicorn (uvloop + httptools, the fastest pair we measured)."""

from __future__ import annotations

import logging

import uvicorn

from switchgear.config import Config
from switchgear.gateway.app import build_app
from switchgear.gateway.state import AppState

#: Seconds SIGTERM waits for requests in flight before the records are drained and we exit.
GRACEFUL_SHUTDOWN_SECONDS = 30


def uvicorn_config(config: Config, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn settings for ``config``: fast loop and parser, no access log on the hot path."""
    return uvicorn.Config(
        build_app(AppState.build(config)),
        host=config.server.host,
        port=config.server.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        backlog=4096,
    )


def serve(config: Config, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish and every record is written."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = uvicorn.Server(uvicorn_config(config, log_level))
    server.run()
    if not server.started:
        raise SystemExit(3)
