"""The Backend protocol: how the router talks to an inference server, whatever it is.

A backend receives the OpenAI request body (with ``model`` already set to the upstream's own model
name) and answers in OpenAI's shapes:

Both take the request's priority ``tier`` (interactive, standard or batch) for backends that
schedule by it (the embedded engine); the others ignore it.

- ``complete`` returns the whole response body (``chat.completion``, ``text_completion`` or the
  embeddings ``list``), with ``usage`` filled in;
- ``stream`` yields the chunk bodies (``chat.completion.chunk`` / ``text_completion``) as they are
  produced; when the request asked ``stream_options.include_usage`` the last chunk carries
  ``usage`` (the gateway also asks for it so it can count tokens, and drops it again when the
  client did not ask).

Failures are raised as ``switchgear.errors`` (``UpstreamConnectError`` and friends): a backend maps
its foreign errors itself. A backend never blocks the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from switchgear.exchange import Operation

Body = dict[str, Any]


class Backend(Protocol):
    """One deployment's model server, seen through OpenAI's request and response shapes."""

    name: str

    async def start(self) -> None:
        """Acquire what the backend needs (connection pool, model, worker thread)."""

    async def complete(self, operation: Operation, body: Body, tier: str = "standard") -> Body:
        """Answer one non-streaming request."""

    def stream(
        self, operation: Operation, body: Body, tier: str = "standard"
    ) -> AsyncIterator[Body]:
        """Answer one streaming request chunk by chunk."""

    async def check(self) -> None:
        """Raise an UpstreamError if the model server cannot take requests now."""

    async def aclose(self) -> None:
        """Release everything ``start`` acquired; requests in flight are finished first."""
