"""A small client of the W3C WebDriver protocol, driving Debian's headless Chromium through
chromedriver: the dozen commands the console tests use, over plain HTTP.

Why not Selenium: these few commands are a stable W3C standard, so the client is short and adds
no dependency (Selenium would bring its own lock entries, and its driver manager reaches the
network when it cannot find a driver); a failure here reads as chromedriver's own error.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import urllib3

from servers import free_port

#: The key W3C WebDriver names an element reference with.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
#: The viewport the console is checked at, in CSS pixels: a laptop screen.
WINDOW = (1366, 900)
#: How long a wait for the page gives up after, in seconds (a failure, never a timing assert).
WAIT_S = 20.0
#: What to run when the browser is missing (scripts/setup --dev installs these Debian packages).
INSTALL_HINT = "scripts/setup --dev (Debian: apt-get install chromium chromium-driver)"

T = TypeVar("T")


class WebDriverError(AssertionError):
    """chromedriver answered a command with an error (its message is kept)."""


class ConsoleLogError(AssertionError):
    """The page logged errors to its console (JS exceptions, CSP violations, failed loads)."""


def browser_paths() -> tuple[str, str]:
    """The chromium and chromedriver executables; a failure that names the install command when
    either is missing (the browser tests never skip)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise AssertionError(f"headless Chromium is missing (chromium: {chromium}, chromedriver: "
                             f"{driver}): run {INSTALL_HINT}")
    return chromium, driver


@contextmanager
def chromedriver() -> Iterator[str]:
    """Run chromedriver on a free loopback port; yield its URL; stop it at the end."""
    _, driver = browser_paths()
    port = free_port()
    # its output goes to a file: a pipe nobody reads would stall it once full
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen([driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
                                   stdout=output, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + WAIT_S
            while not _driver_ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    raise RuntimeError("chromedriver did not start: "
                                       + output.read().decode(errors="replace"))
                time.sleep(0.05)
            yield url
        finally:
            process.terminate()
            process.wait(30)


def _driver_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/status", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Element:
    """One element of the page, by its WebDriver reference."""

    def __init__(self, browser: Browser, reference: str) -> None:
        self.browser, self.reference = browser, reference

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self.browser.command(method, f"/element/{self.reference}{path}", body)

    @property
    def text(self) -> str:
        """Its rendered text (what a person sees)."""
        return str(self._call("GET", "/text"))

    def attribute(self, name: str) -> str | None:
        """The value of its attribute ``name`` (None when absent)."""
        value = self._call("GET", f"/attribute/{name}")
        return None if value is None else str(value)

    def click(self) -> None:
        """Click it, as a person would: scrolled to the middle of the window first, so the
        console's sticky header is not over it."""
        self.browser.run("arguments[0].scrollIntoView({block: 'center'})",
                         {ELEMENT: self.reference})
        self._call("POST", "/click", {})

    def clear(self) -> None:
        """Empty it (an input)."""
        self._call("POST", "/clear", {})

    def type(self, text: str) -> None:
        """Type ``text`` into it."""
        self._call("POST", "/value", {"text": text})

    @property
    def displayed(self) -> bool:
        """Whether a person would see it."""
        return bool(self.browser.command("GET", f"/element/{self.reference}/displayed"))

    def find(self, css: str) -> Element:
        """The first descendant matching ``css``."""
        return self.browser.element(
            self._call("POST", "/element", {"using": "css selector", "value": css}))

    def find_all(self, css: str) -> list[Element]:
        """Every descendant matching ``css``."""
        return [self.browser.element(found) for found in self._call(
            "POST", "/elements", {"using": "css selector", "value": css})]


class Browser:
    """One headless Chromium session: a fixed laptop-sized window and a profile of its own; the
    console's log is collected so a test can assert it stayed clean."""

    def __init__(self, driver_url: str, profile: Path) -> None:
        chromium, _ = browser_paths()
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=120), retries=False)
        self.driver_url = driver_url
        self.session_path = ""
        width, height = WINDOW
        capabilities = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                        "goog:chromeOptions": {"binary": chromium, "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--no-first-run",
                            "--disable-background-networking", "--disable-extensions",
                            "--disable-component-update", "--disable-sync",
                            f"--window-size={width},{height}", f"--user-data-dir={profile}"]}}
        answer = self._send("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
        self.session_path = f"/session/{answer['sessionId']}"
        # the window size leaves the viewport shorter by the browser's own bars: fix the viewport
        self.devtools("Emulation.setDeviceMetricsOverride",
                      width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.driver_url + path,
                                     json=body if method == "POST" else None)
        answer = response.json()
        value = answer.get("value") if isinstance(answer, dict) else None
        if response.status != 200:
            detail = value if isinstance(value, dict) else {"message": answer}
            first_line = (str(detail.get("message", "")).splitlines() or [""])[0]
            raise WebDriverError(f"{method} {path}: {detail.get('error')}: {first_line}")
        return value

    def command(self, method: str, path: str, body: Any = None) -> Any:
        """Send one WebDriver command of this session; its value."""
        return self._send(method, self.session_path + path, body)

    def devtools(self, command: str, **params: Any) -> Any:
        """Run a Chrome DevTools Protocol ``command`` (chromedriver's own extension command)."""
        return self.command("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def element(self, found: dict[str, str]) -> Element:
        """The Element of a WebDriver element reference."""
        return Element(self, found[ELEMENT])

    def close(self) -> None:
        """End the session (the browser quits)."""
        if self.session_path:
            self.command("DELETE", "")
            self.session_path = ""
        self.http.clear()

    def open(self, url: str) -> None:
        """Load ``url``."""
        self.command("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page."""
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> Element:
        """The first element matching ``css`` (a WebDriverError when there is none)."""
        return self.element(self.command("POST", "/element",
                                         {"using": "css selector", "value": css}))

    def find_all(self, css: str) -> list[Element]:
        """Every element matching ``css``, in document order."""
        return [self.element(found) for found in self.command(
            "POST", "/elements", {"using": "css selector", "value": css})]

    def wait(self, condition: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
        """Poll ``condition`` until it returns something truthy; that value. Gives up with an
        AssertionError naming ``what`` (and the page's text, to see why) after ``timeout``."""
        deadline = time.monotonic() + timeout
        failure: WebDriverError | None = None
        while True:
            try:
                value = condition()
            except WebDriverError as error:  # e.g. an element replaced by a live re-render
                value, failure = None, error
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.run("return document.body ? document.body.innerText : ''")
                raise AssertionError(f"waited {timeout:g}s for {what} (last driver error: "
                                     f"{failure}); the page shows:\n{body}")
            time.sleep(0.1)

    def wait_for(self, css: str, text: str | None = None, timeout: float = WAIT_S) -> Element:
        """The first displayed element matching ``css`` (whose text contains ``text``, if
        given), once there is one."""

        def shown() -> Element | None:
            for element in self.find_all(css):
                if element.displayed and (text is None or text in element.text):
                    return element
            return None

        return self.wait(shown, f"{css!r}" + (f" showing {text!r}" if text else ""), timeout)

    def screenshot(self, path: Path) -> Path:
        """Save the whole page, beyond the window too, as a PNG at ``path``."""
        width, height = self.run(
            "scrollTo(0, 0); const page = document.documentElement;"
            "return [Math.max(page.scrollWidth, innerWidth), Math.max(page.scrollHeight, innerHeight)]")
        shot = self.devtools("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def overflow(self) -> int:
        """How many CSS pixels the page is wider than the viewport (0: nothing is cut off or
        needs sideways scrolling)."""
        return int(self.run("return Math.max(0, document.documentElement.scrollWidth"
                            " - document.documentElement.clientWidth)"))

    def console_entries(self) -> list[dict[str, Any]]:
        """Every entry of the page's console logged since the last call."""
        entries: list[dict[str, Any]] = self.command("POST", "/se/log", {"type": "browser"})
        return entries

    def assert_console_clean(self, allowed: Callable[[str], bool] = lambda message: False
                             ) -> None:
        """Fail if the page logged an error since the last check (a JS exception, a CSP
        violation, a failed load) other than those ``allowed`` says are expected."""
        errors = [entry["message"] for entry in self.console_entries()
                  if entry.get("level") == "SEVERE" and not allowed(entry["message"])]
        if errors:
            raise ConsoleLogError("the console logged errors:\n" + "\n".join(errors))
