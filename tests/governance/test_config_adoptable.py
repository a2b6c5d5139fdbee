"""Valid means adoptable: a config no replica could serve is never stored; a gateway whose store
holds one anyway (written by an older release) starts on the newest version it can serve and
says so once; and what `--config FILE` does beside an existing store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import yaml

from switchgear.cli.admin_client import AdminError, admin_call
from switchgear.config import Config
from switchgear.governance.versions import ConfigVersion, ConfigVersions
from switchgear.simulator.server import RunningSimulator
from switchgear.store import open_store

from servers import break_glass, fetch_records, gateway, serving_version, wait_for_version

ADMIN = "sg-adoptable-admin-0123456789abcdef0123"
HELLO = [{"role": "user", "content": "Say hello"}]
#: Two patterns that compile alone but not joined into the one expression that runs.
CLASHING = {"input": [{"check": "patterns", "action": "block",
                       "patterns": ["(?P<id>ab-\\d+)", "(?P<id>cd-\\d+)"]}]}


def chat(*sims: tuple[str, RunningSimulator]) -> dict[str, Any]:
    """The ``models`` section: alias chat over the named simulators."""
    return {"chat": {"deployments": [{"name": name, "backend": "openai_http",
                                      "url": sim.base_url, "model": "sim"}
                                     for name, sim in sims]}}


def call(base_url: str, method: str, path: str, body: Any = None) -> Any:
    return admin_call(base_url.removesuffix("/v1"), method, path, ADMIN, body)


def served_by(base_url: str, store_url: str) -> set[tuple[str, int]]:
    """Send two chats; the (deployment, config version) their records name."""
    with openai.OpenAI(base_url=base_url, api_key=ADMIN, max_retries=0) as sdk:
        ids = {sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=2).headers["x-request-id"]
            for _ in range(2)}
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in fetch_records(store_url) if r.request_id in ids]
        if len(records) == len(ids) or time.monotonic() > deadline:
            return {(r.deployment or "", r.config_version) for r in records}
        time.sleep(0.05)


def store_version(store_url: str, sections: dict[str, Any], change_id: str | None) -> int:
    """Write the newest version's YAML with ``sections`` replaced straight into the store (as
    an older release would have); its number."""

    async def write() -> int:
        store = open_store(store_url)
        await store.open()
        try:
            versions = ConfigVersions(store)
            latest = await versions.get()
            assert latest is not None
            data = {**(yaml.safe_load(latest.config) or {}), **sections}
            number = latest.version + 1
            assert await versions.add_version(ConfigVersion(
                number, yaml.safe_dump(data), change_id, "older-release", time.time(), False))
            return number
        finally:
            await store.close()

    return asyncio.run(write())


def stored(base_url: str) -> tuple[list[int], int]:
    """The stored version numbers, and how many change requests there are."""
    history = call(base_url, "GET", "/admin/config/history")
    return [v["version"] for v in history["versions"]], len(history["changes"])


@pytest.fixture
def config_of(make_config: Callable[..., Config]) -> Callable[..., Config]:
    """A config over the given simulators, on the test's SQLite file, polling every 0.1 s."""

    def make(*sims: tuple[str, RunningSimulator], **sections: Any) -> Config:
        config = make_config(chat(*sims))
        data = {**config.model_dump(mode="json"), **sections,
                "governance": {"poll_interval_s": 0.1}}
        return Config.model_validate(data)

    return make


@pytest.fixture
def admin_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.delenv("SG_TEST_UNSET_KEY", raising=False)
    yield ADMIN


@pytest.mark.parametrize("sections, named", [
    ({"guards": CLASHING}, "the patterns cannot be used together"),
    ({"guards": {"input": [{"check": "custom", "path": "custom_checks:Unready"}]}},
     "RuntimeError: no model file"),
    ({"models": {"chat": {"deployments": [
        {"name": "k", "backend": "openai_http", "url": "http://127.0.0.1:9/v1",
         "api_key_env": "SG_TEST_UNSET_KEY"}]}}},
     "environment variables not set: SG_TEST_UNSET_KEY (models.chat.deployments.0.api_key_env)"),
])
@pytest.mark.parametrize("glass", [False, True])
def test_a_change_that_cannot_serve_is_refused_and_nothing_is_stored(
        config_of: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        admin_key: str, sections: dict[str, Any], named: str, glass: bool) -> None:
    with gateway(config_of(("a", simulators()))) as base_url:
        with pytest.raises(AdminError) as refused:
            call(base_url, "POST", "/admin/config/changes",
                 {"sections": sections, "break_glass": glass})
        assert str(refused.value).startswith("400: ") and named in str(refused.value)
        assert stored(base_url) == ([1], 0)
        assert serving_version(base_url, ADMIN) == 1


def test_a_gateway_starts_on_the_newest_version_it_can_serve_and_says_so_once(
        config_of: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        admin_key: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = simulators(), simulators()
    config = config_of(("a", a))
    with gateway(config) as base_url:
        break_glass(base_url, ADMIN, {"models": chat(("b", b))})
    bad = store_version(config.store.url, {"guards": CLASHING}, "chg_older")
    assert bad == 3
    with caplog.at_level(logging.INFO, "switchgear"), gateway(config) as base_url:
        assert serving_version(base_url, ADMIN) == 2
        assert served_by(base_url, config.store.url) == {("b", 2)}
        time.sleep(0.5)  # five polls of the store: the bad version is not tried again
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None
        message = errors[0].getMessage()
        for said in ("config version 3 cannot serve on this replica, so version 2 serves",
                     "the patterns cannot be used together",
                     "`switchgear config rollback 2`", "`switchgear config propose FILE`"):
            assert said in message
        # the way out it names works: roll back (here at once, by break-glass)
        back = call(base_url, "POST", "/admin/config/rollback",
                    {"version": 2, "break_glass": True})
        assert back["applied_version"] == 4
        wait_for_version(base_url, 4, ADMIN)
        assert call(base_url, "GET", "/admin/config?version=4")["config"] == \
            call(base_url, "GET", "/admin/config?version=2")["config"]
        assert served_by(base_url, config.store.url) == {("b", 4)}
        with pytest.raises(AdminError, match="400: Cannot roll back to it: config version 3"):
            call(base_url, "POST", "/admin/config/rollback", {"version": 3})
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_version_that_cannot_serve_here_is_logged_once_while_the_old_one_serves(
        config_of: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        admin_key: str, caplog: pytest.LogCaptureFixture) -> None:
    config = config_of(("a", simulators()))
    with caplog.at_level(logging.INFO, "switchgear"), gateway(config) as base_url:
        store_version(config.store.url, {"guards": CLASHING}, "chg_elsewhere")
        time.sleep(0.6)
        assert serving_version(base_url, ADMIN) == 1
        assert served_by(base_url, config.store.url) == {("a", 1)}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [e.exc_info for e in errors] == [None]
    assert "config version 2 cannot serve on this replica, so version 1 serves" in \
        errors[0].getMessage()


def test_while_no_change_was_applied_a_changed_file_becomes_the_next_version(
        config_of: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        admin_key: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = simulators(), simulators()
    with gateway(config_of(("a", a))) as base_url:
        assert serving_version(base_url, ADMIN) == 1
    with caplog.at_level(logging.INFO, "switchgear"), \
            gateway(edited := config_of(("b", b))) as base_url:
        shown = call(base_url, "GET", "/admin/config")
        assert (shown["version"], shown["serving"], shown["applied_by"]) == (2, 2, "config-file")
        assert served_by(base_url, edited.store.url) == {("b", 2)}
    said = [r for r in caplog.records if "stored the file as config version 2" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO]
    with gateway(config_of(("b", b))) as base_url:  # the same file again: nothing new
        assert stored(base_url)[0] == [2, 1]


def test_once_a_change_was_applied_the_store_decides_and_the_file_is_warned_about(
        config_of: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        admin_key: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = simulators(), simulators(), simulators()
    config = config_of(("a", a))
    with gateway(config) as base_url:
        break_glass(base_url, ADMIN, {"models": chat(("b", b))})
    with caplog.at_level(logging.INFO, "switchgear"), gateway(config_of(("c", c))) as base_url:
        assert serving_version(base_url, ADMIN) == 2
        assert served_by(base_url, config.store.url) == {("b", 2)}
        assert stored(base_url)[0] == [2, 1]
    (warning,) = [r for r in caplog.records if "config file differs" in r.getMessage()]
    message = warning.getMessage()
    assert warning.levelno == logging.WARNING
    assert config.store.url in message and "holds applied change requests" in message
    assert "`switchgear config propose FILE`" in message and "fresh store" in message
