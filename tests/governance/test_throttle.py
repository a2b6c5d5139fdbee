"""The throttle that keeps floods of admin calls and failed logins to one entry per interval."""

from __future__ import annotations

from switchgear.governance.throttle import Throttle


def test_one_event_per_interval_with_the_count_held_back() -> None:
    throttle = Throttle(interval=300)
    assert throttle.due("a", now=0) == 0
    assert throttle.due("a", now=10) is None
    assert throttle.due("b", now=11) == 0  # subjects are independent
    assert throttle.due("a", now=299) is None
    assert throttle.due("a", now=300) == 2  # the two held back go with this one
    assert throttle.due("a", now=301) is None


def test_no_interval_records_everything_and_forget_undoes_a_record() -> None:
    every = Throttle(interval=0)
    assert [every.due("a", now=0) for _ in range(3)] == [0, 0, 0]
    throttle = Throttle(interval=300)
    assert throttle.due("a", now=0) == 0
    throttle.forget("a")  # the entry could not be written: the next event is due again
    assert throttle.due("a", now=1) == 0


def test_subjects_are_bounded() -> None:
    throttle = Throttle(interval=300, max_subjects=2)
    for subject in ("a", "b", "c"):
        assert throttle.due(subject, now=0) == 0
    assert throttle.due("a", now=1) == 0  # the oldest was forgotten, so it is due again
    assert throttle.due("c", now=1) is None
