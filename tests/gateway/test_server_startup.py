"""`switchgear serve`'s server (GatewayServer) after start-up: what start-up built is out of the
garbage collector's reach, so a full collection walks only what came after (it walked the
~120,000 start-up objects, 53 ms a pass on benchmarks/overhead's gateway, in the tail of every
request waiting meanwhile); and it says where it listens."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

import pytest

from switchgear.config import Config
from switchgear.gateway.listener import listen
from switchgear.gateway.server import GatewayServer, uvicorn_config

from servers import free_port


def test_start_up_freezes_what_it_built_and_says_where_it_listens(
        make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture) -> None:
    config = make_config({"m": {"deployments": [{"name": "sim", "backend": "simulated"}]}})
    port = free_port()
    frozen = gc.get_freeze_count()
    caplog.set_level(logging.INFO, logger="switchgear.gateway")
    with listen("127.0.0.1", port) as sock:
        server = GatewayServer(uvicorn_config(config, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.started
            assert gc.get_freeze_count() > frozen
        finally:
            server.should_exit = True
            thread.join(30)
            gc.unfreeze()  # the test process goes on: let its collector see everything again
    assert f"listening on http://127.0.0.1:{port}" in caplog.text
