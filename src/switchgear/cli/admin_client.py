"""A small client of the gateway's admin API for the CLI (stdlib HTTP, JSON in and out).

Errors come in two kinds: ``AdminError``, the gateway answered and refused (its message), and
``Unreachable``, no gateway answered at the URL (refused, unknown host, no answer in time, or
something that is not a Switchgear gateway), said in the user's words with what to do.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

#: Seconds one admin call waits for the gateway's answer.
CALL_TIMEOUT = 10.0
#: Seconds between two readiness probes while waiting for a gateway.
POLL_INTERVAL = 0.5


class AdminError(Exception):
    """The admin API refused the call or could not be reached; the message says why, and
    ``status`` is the HTTP status of a refusal (None when nothing answered)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(AdminError):
    """No Switchgear gateway answered at the URL; the message says why and what to do."""


def admin_call(url: str, method: str, path: str, token: str | None = None,
               body: Any = None, timeout: float = CALL_TIMEOUT) -> Any:
    """Call ``method path`` on the gateway at ``url``; the parsed JSON answer."""
    data = admin_fetch(url, method, path, token, body, timeout)
    try:
        return json.loads(data)
    except ValueError:
        raise Unreachable(_not_a_gateway(url, f"answered {path} with something other than "
                                         "JSON")) from None


def admin_fetch(url: str, method: str, path: str, token: str | None = None,
                body: Any = None, timeout: float = CALL_TIMEOUT) -> bytes:
    """Call ``method path`` on the gateway at ``url``; the answer's bytes."""
    request = _request(url, path, method, None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as error:
        try:
            message = json.load(error)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            raise Unreachable(_not_a_gateway(url, f"answered {path} with {error.code} "
                                             f"{error.reason} and no Switchgear error")) from None
        raise AdminError(f"{error.code}: {message}", error.code) from None
    except (OSError, http.client.HTTPException) as error:
        raise Unreachable(unreachable(url, error, timeout)) from None


def unreachable(url: str, error: BaseException, timeout: float = CALL_TIMEOUT) -> str:
    """Why no gateway answered at ``url``, and what to do, from the error the call raised."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    where = f"cannot reach the gateway at {url}"
    if isinstance(reason, ConnectionRefusedError):
        return (f"{where} (connection refused): is it running? start it with `switchgear "
                "serve` (or pass --url); in a script, `switchgear wait` waits until it is ready")
    if isinstance(reason, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname or url
        return f"{where} (unknown host {host!r}): check --url"
    if isinstance(reason, TimeoutError):
        return (f"{where} (no answer within {timeout:g} s): is it overloaded, or is --url "
                "another server?")
    if isinstance(reason, http.client.HTTPException):
        return _not_a_gateway(url, "answered something other than HTTP")
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return f"{where} ({text.lower()}): is it running? start it with `switchgear serve` (or " \
           "pass --url)"


def _request(url: str, path: str, method: str = "GET",
             data: bytes | None = None) -> urllib.request.Request:
    """The request for ``path`` on the gateway at ``url``; Unreachable if ``url`` is no URL."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Unreachable(f"--url {url!r} is not a gateway URL: pass it as http://HOST:PORT")
    return urllib.request.Request(url.rstrip("/") + path, method=method, data=data)


def _not_a_gateway(url: str, what: str) -> str:
    return f"the server at {url} {what}: is --url a Switchgear gateway?"


def wait_ready(url: str, timeout: float, *, interval: float = POLL_INTERVAL,
               clock: Callable[[], float] = time.monotonic) -> str | None:
    """Poll GET /readyz of the gateway at ``url`` until it answers 200 or ``timeout`` seconds
    pass: None when ready, else why not (the last probe's problem, in the user's words)."""
    deadline = clock() + timeout
    while True:
        problem = _readiness(url, max(0.1, min(CALL_TIMEOUT, deadline - clock())))
        if problem is None or clock() + interval > deadline:
            return problem
        time.sleep(interval)


def _readiness(url: str, timeout: float) -> str | None:
    """None when the gateway at ``url`` is ready; else why not (Unreachable if ``url`` is no
    URL at all)."""
    try:
        with urllib.request.urlopen(_request(url, "/readyz"), timeout=timeout):
            return None
    except urllib.error.HTTPError as error:
        try:
            report = json.loads(error.read())
        except ValueError:
            report = None
        if not isinstance(report, dict) or report.get("status") != "unready":
            return _not_a_gateway(url, f"answered /readyz with {error.code} {error.reason}")
        parts = [("store", report.get("store")), *dict(report.get("deployments") or {}).items()]
        waiting = "; ".join(f"{name}: {problem}" for name, problem in parts if problem != "ok")
        return f"the gateway at {url} is up but not ready ({waiting})"
    except (OSError, http.client.HTTPException) as error:
        return unreachable(url, error, timeout)
