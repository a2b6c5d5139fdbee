"""The openai_http backend's active health check, against real simulators over loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from switchgear.backends.openai_http import OpenAIHTTPBackend
from switchgear.config import ConfigError, DeploymentConfig, parse_config
from switchgear.errors import SwitchgearError
from switchgear.simulator.faults import Faults
from switchgear.simulator.server import RunningSimulator

from servers import BackgroundLoop


def check(background: BackgroundLoop, url: str, **settings: Any) -> str | None:
    """The check's failure (its error's class), or None when it passed."""
    config = DeploymentConfig(name="d", backend="openai_http", url=url, model="sim", **settings)

    async def run() -> str | None:
        backend = OpenAIHTTPBackend(config)
        await backend.start()
        try:
            await backend.check()
        except SwitchgearError as error:
            return type(error).__name__
        finally:
            await backend.aclose()
        return None

    result: str | None = background.run(run())
    return result


def test_a_server_that_lists_models_but_hangs_fails_only_the_completion_check(
        simulators: Callable[..., RunningSimulator], background: BackgroundLoop) -> None:
    hung = simulators(faults=Faults(hang_rate=1.0))
    assert check(background, hung.base_url) is None  # GET /models answers
    assert check(background, hung.base_url, health_check="completion") == "UpstreamTimeout"
    healthy = simulators()
    assert check(background, healthy.base_url, health_check="completion") is None


def test_a_completion_check_needs_the_upstream_model_name() -> None:
    with pytest.raises(ConfigError, match="health_check: completion needs model"):
        parse_config({"models": {"m": {"deployments": [{
            "name": "d", "backend": "openai_http", "url": "http://127.0.0.1:1/v1",
            "health_check": "completion"}]}}})
