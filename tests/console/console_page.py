"""The console as a person uses it, through headless Chromium: sign in, open a page, read its
figures and tables, save a screenshot. Selectors are the console's documented test hooks
(console.js's header): form#signin, #whoami, main#page[data-state], [data-stat], td[data-col]."""

from __future__ import annotations

import re
from pathlib import Path

from console_site import Site
from webdriver import Browser, Element

#: The pages, in the nav's order.
PAGES = ("overview", "slo", "cost", "routing", "requests", "batches", "governance", "scorecard")
#: What main#page's data-state is once a render has finished (or been refused).
SETTLED = ("ready", "forbidden", "error")


class Console:
    """One test's view of the console at ``site``; screenshots go under ``shots``."""

    def __init__(self, browser: Browser, site: Site, shots: Path, saved: list[Path]) -> None:
        self.browser, self.site, self.shots, self.saved = browser, site, shots, saved
        #: HTTP statuses the test expects the browser to log as failed loads (403 pages).
        self.refusals: set[int] = set()

    def expect_refusals(self, *statuses: int) -> None:
        """Say that the API will refuse some of the page's calls with ``statuses`` (the browser
        logs each as a failed load, which is then not an error of the console)."""
        self.refusals.update(statuses)

    def expected_refusal(self, message: str) -> bool:
        """Whether a logged console error is a refusal this test expects."""
        return any(f"the server responded with a status of {status}" in message
                   for status in self.refusals)

    def reset(self) -> None:
        """Open the console signed out (the tab's sessionStorage emptied); forget the log of
        the unauthenticated who-am-I call that shows the sign-in form."""
        self.browser.open(self.site.console)
        self.browser.run("sessionStorage.clear()")
        self.browser.open(self.site.console + "#/overview")
        self.browser.command("POST", "/refresh", {})
        self.browser.wait_for("form#signin")
        self.browser.console_entries()
        self.refusals = set()

    def sign_in(self, key: str) -> str:
        """Sign in with the site's key called ``key``; the header's who-am-I text."""
        return self.sign_in_with(self.site.keys[key])

    def sign_in_with(self, secret: str) -> str:
        """Sign in with the key ``secret``; the header's who-am-I text."""
        self._submit(secret)
        return self.browser.wait_for("#whoami").text

    def sign_in_refused(self, secret: str) -> str:
        """Try to sign in with ``secret``, expecting a refusal; the message shown."""
        self.expect_refusals(401)
        self._submit(secret)
        return self.browser.wait_for("#signin-error").text

    def _submit(self, secret: str) -> None:
        field = self.browser.wait_for("input#key")
        field.clear()
        field.type(secret)
        self.browser.find("form#signin button[type=submit]").click()

    def sign_out(self) -> None:
        """Press Sign out; the sign-in form is shown again."""
        self.browser.find("button#signout").click()
        self.browser.wait_for("form#signin")

    def open(self, page: str, query: str = "") -> str:
        """Go to ``page`` by its nav link (or, with ``query``, by its address); the state it
        settles in: ready, forbidden or error."""
        if query:
            self.browser.open(f"{self.site.console}#/{page}?{query}")
        else:
            self.browser.find(f"a[data-page={page}]").click()
        return self.settled(page)

    def settled(self, page: str) -> str:
        """The state ``page`` settles in."""
        main = self.browser.wait(
            lambda: self.browser.run(
                "const m = document.querySelector('main#page');"
                "return m && m.dataset.page === arguments[0]"
                " && arguments[1].includes(m.dataset.state) ? m.dataset.state : null",
                page, list(SETTLED)),
            f"the {page} page to finish rendering")
        return str(main)

    @property
    def main(self) -> Element:
        """The page's content (main#page)."""
        return self.browser.find("main#page")

    def stat(self, name: str) -> float | None:
        """The raw value of the page's figure tile ``name`` (None when it shows none)."""
        value = self.browser.wait_for(f"[data-stat='{name}']").attribute("data-value")
        return float(value) if value else None

    def _cells(self, column: str, within: str, read: str) -> list[str]:
        # one script reads every cell at once, so a live re-render cannot swap the table midway
        cells: list[str] = self.browser.run(
            "return [...document.querySelectorAll(arguments[0])]"
            f".map((cell) => {read})", f"{within} td[data-col='{column}']")
        return cells

    def column(self, column: str, within: str = "main#page") -> list[str]:
        """The shown text of every cell of ``column`` in the tables under ``within``."""
        return self._cells(column, within, "cell.innerText.trim()")

    def values(self, column: str, within: str = "main#page") -> list[float]:
        """The raw numbers of every cell of ``column`` in the tables under ``within``."""
        return [float(value) for value in
                self._cells(column, within, "cell.dataset.value || ''") if value]

    def request_ids(self) -> list[str]:
        """The request ids of the request log's rows, top to bottom."""
        ids: list[str] = self.browser.run(
            "return [...document.querySelectorAll('main#page tr[data-request-id]')]"
            ".map((row) => row.dataset.requestId)")
        return ids

    def forbidden_text(self) -> str:
        """The 403 page's text."""
        return self.browser.wait_for("main#page .forbidden").text

    def screenshot(self, name: str) -> Path:
        """Save the whole page as ``<name>.png`` in the run's screenshot folder, then check that
        it fits the laptop screen's width (nothing cut off or scrolled sideways)."""
        path = self.browser.screenshot(self.shots / (re.sub(r"[^\w.-]+", "-", name) + ".png"))
        self.saved.append(path)
        overflow = self.browser.overflow()
        assert overflow == 0, f"{name} is {overflow} px wider than the screen (see {path})"
        return path
