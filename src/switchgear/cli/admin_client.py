"""A small client of the gateway's admin API for the CLI (stdlib HTTP, JSON in and out)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class AdminError(Exception):
    """The admin API refused the call or could not be reached; the message says why."""


def admin_call(url: str, method: str, path: str, token: str | None = None,
               body: Any = None, timeout: float = 10.0) -> Any:
    """Call ``method path`` on the gateway at ``url``; the parsed JSON answer."""
    return json.loads(admin_fetch(url, method, path, token, body, timeout))


def admin_fetch(url: str, method: str, path: str, token: str | None = None,
                body: Any = None, timeout: float = 10.0) -> bytes:
    """Call ``method path`` on the gateway at ``url``; the answer's bytes."""
    request = urllib.request.Request(url.rstrip("/") + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
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
            message = error.reason
        raise AdminError(f"{error.code}: {message}") from None
    except OSError as error:
        raise AdminError(f"cannot reach {url}: {error}") from None
