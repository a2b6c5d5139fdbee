"""The stages a request passes through, in order; each does one job and hands the Exchange on.

The order is declared once, in ``gateway/state.py``, with ``chain``::

    Record → Resolve → Admit → Prompt → Guard → Cache → Prioritize → Route → backend

A stage takes the Exchange and returns a Reply: the whole response body, or an async iterator of
chunk bodies for a stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import pairwise
from typing import Any

from switchgear.exchange import Exchange

Body = dict[str, Any]
Reply = Body | AsyncIterator[Body]
Handler = Callable[[Exchange], Awaitable[Reply]]


class Stage(ABC):
    """A stage with a stage after it: ``chain`` sets ``next_stage``."""

    next_stage: Handler

    @abstractmethod
    async def __call__(self, exchange: Exchange) -> Reply:
        """Do this stage's job, handing ``exchange`` to ``next_stage`` on the way."""


def chain(*stages: Handler | None) -> Handler:
    """Link ``stages`` in the order given (None: a stage this config leaves out); every one but
    the last must be a Stage. The first, which a request enters."""
    present = [stage for stage in stages if stage is not None]
    for stage, after in pairwise(present):
        if not isinstance(stage, Stage):
            raise TypeError(f"{type(stage).__name__} cannot have a stage after it")
        stage.next_stage = after
    return present[0]


async def close_stream(chunks: AsyncIterator[Body]) -> None:
    """Close a stream the next stage handed back, however far it was read: an async generator
    left unfinished holds its upstream connection, slot and running place until it is closed."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
