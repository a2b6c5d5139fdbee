"""Run a Python program (``switchgear serve``) with cProfile off until SIGUSR1 and off again at
SIGUSR2, which also writes the stats: the profile holds only the requests sent in between.

    python profiled_serve.py OUT.prof .venv/bin/switchgear serve --config ...

SIGUSR1 writes OUT.prof.on once the profiler is on; SIGUSR2 writes OUT.prof. Only the main thread
(the event loop's) is profiled.
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
from pathlib import Path
from types import FrameType


class SignalledProfiler:
    """A cProfile profiler switched on and off by signals, its stats written at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.profiler = cProfile.Profile()

    def start(self, signum: int, frame: FrameType | None) -> None:
        """Switch profiling on and say so in ``<path>.on``."""
        self.profiler.enable()
        self.path.with_name(self.path.name + ".on").write_text("on\n")

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Switch profiling off and write the stats."""
        self.profiler.disable()
        self.profiler.dump_stats(self.path)


def main() -> None:
    """Install the signal handlers, then run the program named by the arguments as __main__."""
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    profiled = SignalledProfiler(Path(sys.argv[1]))
    signal.signal(signal.SIGUSR1, profiled.start)
    signal.signal(signal.SIGUSR2, profiled.stop)
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
