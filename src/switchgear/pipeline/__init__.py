"""The stages a request passes through, in order; each holds the next and has one async call.

    Record  →  Route  →  backend

A stage takes the Exchange and returns a Reply: the whole response body, or an async iterator of
chunk bodies for a stream. Admission, guards and cache take their places in front of Route as they
are built.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from switchgear.exchange import Exchange

Body = dict[str, Any]
Reply = Body | AsyncIterator[Body]
Handler = Callable[[Exchange], Awaitable[Reply]]
