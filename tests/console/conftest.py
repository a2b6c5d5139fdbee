"""Fixtures of the console tests: one gateway (with its traffic) and one headless Chromium per
test module, a fresh signed-out console for each test, and the screenshots the run saved."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_page import Console
from console_site import Site, running_site
from webdriver import Browser, chromedriver

from servers import POSTGRES_URL, drop_schema

#: Where the screenshots go (git-ignored); SWITCHGEAR_CONSOLE_SHOTS names another folder.
SHOTS = Path(os.environ.get("SWITCHGEAR_CONSOLE_SHOTS",
                            Path(__file__).resolve().parents[1] / ".artifacts" / "console"))
SAVED = pytest.StashKey[list[Path]]()
OUTCOMES = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.fixture(scope="module")
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    """A gateway over a simulator, with keys of every role in two tenants and real traffic;
    its records in SQLite, or in a PostgreSQL schema of its own (dropped after) for a module
    that sets ``STORE = "postgresql"``."""
    if getattr(request.module, "STORE", "sqlite") == "sqlite":
        with running_site(f"sqlite:///{tmp_path_factory.mktemp('site')}/records.db") as running:
            yield running
        return
    schema = f"sg_console_{uuid.uuid4().hex}"
    try:
        with running_site(f"{POSTGRES_URL}?schema={schema}") as running:
            yield running
    finally:
        asyncio.run(drop_schema(schema))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium (its own profile folder), driven through chromedriver."""
    with chromedriver() as driver_url:
        session = Browser(driver_url, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield session
        finally:
            session.close()


@pytest.fixture
def console(browser: Browser, site: Site, request: pytest.FixtureRequest) -> Iterator[Console]:
    """The console, signed out, for one test; once the test passes, its browser console must
    be free of errors (JS exceptions, CSP violations, failed loads other than the refusals the
    test expects). A failed test leaves a screenshot named after it."""
    page = Console(browser, site, SHOTS, request.config.stash.setdefault(SAVED, []))
    page.reset()
    yield page
    outcome = request.node.stash.get(OUTCOMES, {}).get("call")
    if outcome is not None and outcome.failed:
        page.screenshot("FAILED-" + request.node.name)
    else:
        browser.assert_console_clean(page.expected_refusal)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test, for the console fixture's teardown."""
    report = yield
    item.stash.setdefault(OUTCOMES, {})[report.when] = report
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    """Name the screenshots the run saved."""
    saved = sorted({path.name for path in config.stash.get(SAVED, [])})
    if saved:
        terminalreporter.write_sep("-", f"{len(saved)} console screenshots in {SHOTS}")
        terminalreporter.write_line(textwrap.fill(", ".join(saved), 100, break_on_hyphens=False))
