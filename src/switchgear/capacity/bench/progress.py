"""A one-line progress bar on stderr for each level as it runs."""

from __future__ import annotations

import sys
from typing import TextIO

from switchgear.capacity.bench.load import Progress

BAR_WIDTH = 24


class ProgressBar:
    """Draws ``label [#####-----] 3.2/10.0 s  sent 812  done 810  failed 2`` over itself on a
    terminal, and one line per level when stderr is not one."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()

    def level(self, label: str, seconds: float) -> Progress:
        """The progress callback of one level expected to take ``seconds``."""

        def show(sent: int, ended: int, failed: int, elapsed: float) -> None:
            share = min(1.0, elapsed / seconds) if seconds > 0 else 1.0
            filled = round(share * BAR_WIDTH)
            line = (f"{label:<18} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
                    f"{min(elapsed, seconds):5.1f}/{seconds:.1f} s  sent {sent}  done {ended}  "
                    f"failed {failed}")
            if self._live:
                self._stream.write("\r" + line)
                self._stream.flush()

        return show

    def level_done(self, summary: str) -> None:
        """End the level's line with its summary."""
        self._stream.write(("\r\033[K" if self._live else "") + summary + "\n")  # clear the bar
        self._stream.flush()
