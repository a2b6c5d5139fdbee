"""Turning a stream of token bytes into the text a client may see, stop sequences removed."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class StopSequenceText:
    """Decodes token bytes incrementally and withholds text that might begin a stop sequence.

    A token can end in the middle of a UTF-8 character or of a stop sequence; such text is held
    back until the next token settles it, so a client never sees half a character or any part of
    a stop sequence.
    """

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stop = tuple(s for s in stop if s)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text now safe to show (maybe empty).

        Once a stop sequence is complete, ``stopped`` is set and the text before it is returned.
        """
        if self.stopped:
            return ""
        self._held += self._decoder.decode(piece)
        return self._release()

    def flush(self) -> str:
        """The text still held back, once generation has ended without a stop sequence."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(b"", final=True)
        text, self._held = self._held, ""
        return text

    def _release(self) -> str:
        found = [index for s in self._stop if (index := self._held.find(s)) >= 0]
        if found:
            self.stopped = True
            text, self._held = self._held[: min(found)], ""
            return text
        keep = max((self._partial_stop_length(s) for s in self._stop), default=0)
        cut = len(self._held) - keep
        text, self._held = self._held[:cut], self._held[cut:]
        return text

    def _partial_stop_length(self, stop: str) -> int:
        """Length of the longest end of the held text that is a beginning of ``stop``."""
        for length in range(min(len(stop) - 1, len(self._held)), 0, -1):
            if self._held.endswith(stop[:length]):
                return length
        return 0
