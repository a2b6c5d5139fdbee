"""Passive health of one deployment: ejection, growing backoff, half-open probes, peak EWMA.

Every call takes an explicit ``now``, so time is moved by hand rather than slept through.
"""

from __future__ import annotations

import pytest

from switchgear.config import OutlierConfig
from switchgear.routing.health import EWMA_DECAY_SECONDS, DeploymentHealth, PeakEwma, State

T0 = 1000.0

OUTLIER = OutlierConfig(consecutive_failures=3, error_ratio=0.5, min_requests=10, window_s=10,
                        base_ejection_s=2, max_ejection_s=10)


def health() -> DeploymentHealth:
    """A healthy deployment's health under OUTLIER."""
    return DeploymentHealth(OUTLIER)


def state(h: DeploymentHealth) -> State:
    """``h``'s state, read afresh (a call, so the type checker does not pin it between calls)."""
    return h.state


def eject(h: DeploymentHealth, now: float) -> None:
    """Fail ``h`` consecutively until it is ejected."""
    for _ in range(OUTLIER.consecutive_failures):
        h.failed(now, "UpstreamServerError")
    assert state(h) is State.EJECTED


def probe(h: DeploymentHealth) -> float:
    """Admit the probe that is due once the ejection ends; the time it was admitted."""
    now = h.ejected_until
    assert h.admit(now)
    assert state(h) is State.PROBING
    return now


def test_healthy_deployment_admits_everything() -> None:
    h = health()
    assert all(h.admit(T0) for _ in range(100))
    assert state(h) is State.HEALTHY


def test_ejected_after_consecutive_failures() -> None:
    h = health()
    h.failed(T0, "UpstreamServerError")
    h.failed(T0, "UpstreamServerError")
    assert state(h) is State.HEALTHY and h.admit(T0)
    h.failed(T0, "UpstreamServerError")
    assert state(h) is State.EJECTED
    assert h.ejected_until == T0 + OUTLIER.base_ejection_s
    assert "3 consecutive failures" in h.reason and "UpstreamServerError" in h.reason
    assert not h.available(T0 + 1) and not h.admit(T0 + 1)


def test_a_success_breaks_the_run_of_failures() -> None:
    h = DeploymentHealth(OUTLIER.model_copy(update={"min_requests": 1000}))  # no ratio ejection
    for _ in range(10):
        h.failed(T0, "UpstreamServerError")
        h.failed(T0, "UpstreamServerError")
        h.succeeded(0.01, 0.02, T0)
    assert state(h) is State.HEALTHY
    assert h.consecutive_failures == 0


def test_ejected_on_error_ratio_over_the_window() -> None:
    h = health()
    # Alternating failures and successes: never 3 failures in a row.
    for i in range(9):
        if i % 2 == 0:
            h.failed(T0, "UpstreamServerError")
        else:
            h.succeeded(0.01, 0.02, T0)
    assert state(h) is State.HEALTHY  # 5 of 9 failed, but fewer than min_requests (10)
    h.succeeded(0.01, 0.02, T0)
    h.failed(T0, "UpstreamServerError")  # 6 of 11
    assert state(h) is State.EJECTED
    assert "error ratio 55% over 11 requests" in h.reason


def test_error_ratio_below_the_threshold_keeps_the_deployment() -> None:
    h = health()
    for i in range(200):
        if i % 4 == 0:
            h.failed(T0 + i / 100, "UpstreamServerError")
        else:
            h.succeeded(0.01, 0.02, T0 + i / 100)
    assert state(h) is State.HEALTHY
    assert h.error_ratio(T0 + 2) == pytest.approx(0.25)


def test_failures_older_than_the_window_do_not_count() -> None:
    h = health()
    for i in range(9):  # 5 of 9 failed: over the ratio, but under min_requests
        if i % 2 == 0:
            h.failed(T0, "UpstreamServerError")
        else:
            h.succeeded(0.01, 0.02, T0)
    assert h.error_ratio(T0) == pytest.approx(5 / 9)
    later = T0 + OUTLIER.window_s + 1
    assert h.error_ratio(later) == 0.0
    h.succeeded(0.01, 0.02, later)
    h.failed(later, "UpstreamServerError")  # 6 of 11 if the old ones still counted
    assert state(h) is State.HEALTHY
    assert h.error_ratio(later) == 0.5


def test_exactly_one_probe_after_the_ejection() -> None:
    h = health()
    eject(h, T0)
    until = h.ejected_until
    assert not h.admit(until - 0.001)
    assert h.available(until)
    assert h.admit(until)
    assert state(h) is State.PROBING
    assert not h.available(until) and not h.admit(until)
    assert not h.admit(until + 100)  # still waiting for the probe's verdict


def test_probe_success_readmits() -> None:
    h = health()
    eject(h, T0)
    now = probe(h)
    h.succeeded(0.01, 0.02, now + 0.02)
    assert state(h) is State.HEALTHY
    assert h.reason == "" and h.consecutive_failures == 0
    assert h.error_ratio(now + 0.02) == 0.0  # the failures before the ejection are forgotten
    assert all(h.admit(now + 0.03) for _ in range(5))


def test_probe_failure_re_ejects_for_longer() -> None:
    h = health()
    eject(h, T0)
    first = h.ejected_until - T0
    now = probe(h)
    h.failed(now, "UpstreamConnectError")
    assert state(h) is State.EJECTED
    assert h.reason.startswith("probe failed") and "UpstreamConnectError" in h.reason
    assert h.ejected_until - now > first
    assert not h.admit(now + first)


def test_backoff_doubles_and_is_capped() -> None:
    h = health()
    eject(h, T0)
    backoffs = [h.ejected_until - T0]
    for _ in range(5):
        now = probe(h)
        h.failed(now, "UpstreamConnectError")
        backoffs.append(h.ejected_until - now)
    assert backoffs == [2, 4, 8, 10, 10, 10]  # base 2 s doubling, capped at max_ejection_s 10
    assert backoffs[1] > backoffs[0]


def test_backoff_starts_short_again_after_a_long_healthy_spell() -> None:
    h = health()
    eject(h, T0)
    now = probe(h)
    h.failed(now, "UpstreamConnectError")
    now = probe(h)
    h.succeeded(0.01, 0.02, now)
    assert state(h) is State.HEALTHY
    later = now + OUTLIER.max_ejection_s + 1
    h.succeeded(0.01, 0.02, later)  # healthy for longer than the longest ejection
    eject(h, later)
    assert h.ejected_until - later == OUTLIER.base_ejection_s


def test_released_frees_the_probe() -> None:
    h = health()
    eject(h, T0)
    now = probe(h)
    assert not h.admit(now)
    h.released()  # the probe's client went away: no verdict
    assert h.admit(now)
    assert state(h) is State.PROBING
    assert not h.admit(now)


def test_retry_after_ejects_for_that_long() -> None:
    h = health()
    h.failed(T0, "RateLimited", retry_after=7)
    assert state(h) is State.EJECTED
    assert h.ejected_until == T0 + 7
    assert "asked to back off" in h.reason
    assert not h.admit(T0 + 6.9) and h.admit(T0 + 7)


def test_retry_after_is_capped_at_the_longest_ejection() -> None:
    h = health()
    h.failed(T0, "RateLimited", retry_after=3600)
    assert h.ejected_until == T0 + OUTLIER.max_ejection_s


def test_check_failed_ejects_and_a_passed_check_makes_a_probe_due() -> None:
    h = health()
    h.check_failed(T0, "UpstreamConnectError: refused")
    assert state(h) is State.EJECTED
    assert h.reason == "health check failed: UpstreamConnectError: refused"
    assert h.ejected_until == T0 + 2
    h.check_failed(T0 + 1, "still refused")  # during the ejection: nothing changes
    assert h.ejected_until == T0 + 2
    h.check_failed(T0 + 2, "still refused")  # after it: ejected again, for longer
    assert h.ejected_until == T0 + 2 + 4
    assert h.check_passed(T0 + 3)
    # The check alone readmits nothing: a server may answer its health endpoint and hang on
    # inference. One real request may go now, and only its success readmits.
    assert state(h) is State.EJECTED
    assert h.admit(T0 + 3) and state(h) is State.PROBING
    assert not h.admit(T0 + 3)  # one probe at a time
    assert not h.check_passed(T0 + 3)
    h.succeeded(0.1, 0.2, T0 + 4)
    assert state(h) is State.HEALTHY and h.reason == ""


def test_a_passed_check_does_not_shorten_an_ejection_for_failed_requests() -> None:
    # A hung server answers GET /models: its check passes while every request times out.
    h = health()
    for second in range(3):
        h.failed(T0 + second, "UpstreamTimeout")
    assert state(h) is State.EJECTED and h.ejected_until == T0 + 2 + 2
    assert not h.check_passed(T0 + 3)
    assert not h.admit(T0 + 3)  # the backoff runs on
    assert h.admit(T0 + 4)


def test_a_probe_that_hangs_past_its_timeout_ejects_again_for_longer() -> None:
    h = health()
    h.check_failed(T0, "refused")
    assert h.check_passed(T0 + 1) and h.admit(T0 + 1)
    h.failed(T0 + 6, "UpstreamTimeout")  # the health endpoint answered; inference did not
    assert state(h) is State.EJECTED and h.ejected_until == T0 + 6 + 4


def test_a_readmitted_deployment_ramps_up_to_its_share() -> None:
    h = DeploymentHealth(OUTLIER.model_copy(update={"slow_start_s": 10}))
    assert h.share(T0) == 1.0  # never ejected: all of it
    h.check_failed(T0, "refused")
    h.check_passed(T0 + 1)
    h.admit(T0 + 1)
    h.succeeded(0.1, 0.2, T0 + 2)
    assert h.share(T0 + 2) == pytest.approx(0.1)
    assert h.share(T0 + 7) == pytest.approx(0.55)
    assert h.share(T0 + 12) == 1.0
    off = DeploymentHealth(OUTLIER.model_copy(update={"slow_start_s": 0}))
    off.check_failed(T0, "refused")
    off.check_passed(T0 + 1)
    off.admit(T0 + 1)
    off.succeeded(0.1, 0.2, T0 + 2)
    assert off.share(T0 + 2) == 1.0


def test_check_passed_leaves_a_healthy_deployment_alone() -> None:
    h = health()
    h.failed(T0, "UpstreamServerError")
    h.check_passed(T0)
    assert state(h) is State.HEALTHY
    assert h.consecutive_failures == 1


def test_failures_in_flight_at_the_ejection_do_not_lengthen_it() -> None:
    # Under load many requests are in flight when a deployment dies; each fails after the
    # ejection. They must not eject it again (each time with a doubled backoff).
    h = health()
    eject(h, T0)
    for i in range(20):
        h.failed(T0 + 0.01 * i, "UpstreamConnectError")
    assert state(h) is State.EJECTED
    assert h.ejected_until == T0 + OUTLIER.base_ejection_s
    now = probe(h)
    h.failed(now, "UpstreamConnectError")
    assert h.ejected_until - now == 2 * OUTLIER.base_ejection_s  # the second ejection


def test_a_late_success_does_not_cut_the_ejection_short() -> None:
    # A request sent before the ejection may still succeed after it; only the probe (or an
    # active check) readmits, so an ejection for a high error ratio holds under concurrency.
    h = health()
    eject(h, T0)
    h.succeeded(0.01, 0.02, T0 + 0.5)
    assert state(h) is State.EJECTED
    assert not h.admit(T0 + 0.5)
    now = probe(h)
    h.succeeded(0.01, 0.02, now)
    assert state(h) is State.HEALTHY


def test_successes_feed_both_latency_averages() -> None:
    h = health()
    h.succeeded(0.05, 0.4, T0)
    assert h.ttft.value == 0.05 and h.total.value == 0.4
    h.succeeded(None, 0.4, T0)
    assert h.ttft.value == 0.05


def test_peak_ewma_starts_at_the_first_observation() -> None:
    ewma = PeakEwma()
    assert ewma.value is None
    ewma.observe(0.2, T0)
    assert ewma.value == 0.2


def test_peak_ewma_jumps_up_at_once() -> None:
    ewma = PeakEwma()
    for i in range(50):
        ewma.observe(0.1, T0 + i)
    ewma.observe(1.0, T0 + 50)
    assert ewma.value == 1.0


def test_peak_ewma_decays_down_over_time() -> None:
    ewma = PeakEwma()
    ewma.observe(1.0, T0)
    ewma.observe(0.1, T0)  # no time passed: a faster answer does not pull it down yet
    assert ewma.value == 1.0
    ewma.observe(0.1, T0 + EWMA_DECAY_SECONDS)  # one decay period: 1/e of the old value stays
    assert ewma.value == pytest.approx(0.1 + 0.9 / 2.718281828, rel=1e-6)
    values = []
    for i in range(1, 11):
        ewma.observe(0.1, T0 + EWMA_DECAY_SECONDS + i * EWMA_DECAY_SECONDS)
        assert ewma.value is not None
        values.append(ewma.value)
    assert values == sorted(values, reverse=True)
    assert values[-1] == pytest.approx(0.1, abs=1e-4)


def test_peak_ewma_decays_more_over_a_longer_gap() -> None:
    short, long = PeakEwma(), PeakEwma()
    for ewma in (short, long):
        ewma.observe(1.0, T0)
    short.observe(0.1, T0 + 1)
    long.observe(0.1, T0 + 10)
    assert short.value is not None and long.value is not None
    assert 0.1 < long.value < short.value < 1.0
