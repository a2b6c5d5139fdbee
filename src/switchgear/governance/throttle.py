"""At most one audit entry per subject per interval, with a count of the events held back."""

from __future__ import annotations

from collections.abc import Hashable

#: Subjects remembered; beyond this the oldest are forgotten (their next event is recorded).
MAX_SUBJECTS = 10_000


class Throttle:
    """Says whether an event about a subject (an admin key and its address, say) should be
    recorded now: the first one is, then at most one per ``interval`` seconds; the others are
    counted and the count goes with the next recorded one."""

    def __init__(self, interval: float, max_subjects: int = MAX_SUBJECTS) -> None:
        self.interval = interval
        self.max_subjects = max_subjects
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def due(self, subject: Hashable, now: float) -> int | None:
        """None when the event is held back; else how many were held back since the last."""
        last = self._seen.get(subject)
        if last is not None and now - last[0] < self.interval:
            self._seen[subject] = (last[0], last[1] + 1)
            return None
        self._seen.pop(subject, None)
        if len(self._seen) >= self.max_subjects:
            del self._seen[next(iter(self._seen))]
        self._seen[subject] = (now, 0)
        return 0 if last is None else last[1]

    def forget(self, subject: Hashable) -> None:
        """Treat the subject as never seen (its event could not be recorded after all)."""
        self._seen.pop(subject, None)
