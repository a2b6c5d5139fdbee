"""Redaction of a streamed answer, chunk by chunk, without ever splitting a match: text is held
back until no match could still be in progress, then released redacted."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from switchgear.exchange import Exchange
from switchgear.guards.checks import Check
from switchgear.guards.redact import LONGEST_MATCH, Span


class StreamRedactor:
    """Feeds on the text pieces of one streamed answer and releases them redacted.

    The last ``LONGEST_MATCH`` characters are always held back (a match there may still grow),
    and the cut moves back to the start of any match that straddles it. ``noticed`` is called
    with each check whose redaction changed released text."""

    def __init__(self, checks: Sequence[Check], exchange: Exchange,
                 noticed: Callable[[Check, str], None]) -> None:
        self.checks = checks
        self.exchange = exchange
        self.noticed = noticed
        self.pending = ""
        #: The checks' ``spans``, looked up once; a check without (a custom one) relies on the
        #: hold-back alone.
        self.finders: list[Callable[[str], list[Span]]] = [
            finder for finder in (getattr(check, "spans", None) for check in checks)
            if finder is not None]

    def feed(self, text: str) -> str:
        """Take ``text``; give back what is now safe to send, redacted."""
        self.pending += text
        cut = len(self.pending) - LONGEST_MATCH
        if cut <= 0:
            return ""
        spans = [span for find in self.finders for span in find(self.pending)]
        spans.sort()
        for start, end, _ in reversed(spans):
            if start < cut < end:
                cut = start
        released, self.pending = self.pending[:cut], self.pending[cut:]
        return self._redact(released)

    def flush(self) -> str:
        """Everything still held, redacted (at the end of the answer)."""
        released, self.pending = self.pending, ""
        return self._redact(released)

    def _redact(self, text: str) -> str:
        for check in self.checks:
            finding = check(text, "output", self.exchange) if text else None
            if finding is not None and finding.redacted is not None:
                self.noticed(check, finding.reason)
                text = finding.redacted
        return text
