"""The queue model against queues whose answers are known in closed form (M/M/1, M/M/c, M/D/1,
M/G/1-PS). The model simulates, so figures agree within its sampling error (a few percent)."""

from __future__ import annotations

import math

import pytest
from plan_profiles import (
    closed_level,
    erlang_c,
    exponential_samples,
    mmc_percentile,
    mmc_profile,
    profile,
)

from switchgear.capacity.plan.model import QueueModel
from switchgear.capacity.plan.profile import ProfileError, parse_profile


def model_of(document: dict[str, object]) -> QueueModel:
    return QueueModel(parse_profile(document).closed_loop)


@pytest.mark.parametrize(("servers", "load"), [(1, 0.5), (1, 0.8), (4, 0.5), (4, 0.8), (8, 0.9)])
def test_reproduces_mmc_mean_and_p95(servers: int, load: float) -> None:
    service_rate = 10.0
    model = model_of(mmc_profile(servers, service_rate))
    rate = load * servers * service_rate
    mean = erlang_c(servers, service_rate, rate) / (servers * service_rate - rate) + 1 / service_rate
    assert model.mean(rate) == pytest.approx(mean, rel=0.02)
    for q in (0.95, 0.99):
        assert model.percentile(rate, q) == pytest.approx(mmc_percentile(servers, service_rate, rate, q),
                                                          rel=0.04)


def test_highest_rate_within_slo_is_where_mm1_p95_meets_it() -> None:
    # M/M/1: time in system is Exp(μ - λ), so p95 <= s exactly while λ <= μ - ln(20) / s.
    model = model_of(mmc_profile(1, 10.0))
    assert model.max_rate({0.95: 0.5}) == pytest.approx(10 - math.log(20) / 0.5, rel=0.02)


def test_unstable_rates_have_no_finite_latency() -> None:
    model = model_of(mmc_profile(2, 5.0))
    assert model.saturation == pytest.approx(10.0, rel=1e-3)
    assert math.isinf(model.percentile(10.0, 0.95))
    assert math.isinf(model.mean(12.0))
    assert model.error_rate(10.0) == 1.0


def test_time_scales_are_linear_in_the_rate_from_1_at_no_load_and_held_beyond_the_last() -> None:
    closed = parse_profile(mmc_profile(4, 10.0)).closed_loop
    model = QueueModel(closed, time_scales=[(20.0, 1.25), (10.0, 1.5)])
    assert [model.time_scale(rate) for rate in (0, 5, 10, 15, 20, 30)] == pytest.approx(
        [1.0, 1.25, 1.5, 1.375, 1.25, 1.25])
    # At 15/s every service time is 1.375x: M/M/4 at 10 / 1.375 per slot.
    assert model.percentile(15.0, 0.95) == pytest.approx(mmc_percentile(4, 10 / 1.375, 15.0, 0.95),
                                                         rel=0.04)
    # rate x s(rate) reaches the closed-loop 40/s at 40 / 1.25 = 32/s, beyond the last scale.
    assert model.saturation == pytest.approx(32.0, rel=1e-3)
    assert math.isinf(model.percentile(33.0, 0.95))


def test_a_tighter_slo_than_the_idle_latency_allows_no_rate() -> None:
    model = model_of(mmc_profile(4, 10.0))
    assert model.max_rate({0.95: 0.01}) == 0.0


def test_requests_in_service_share_it_as_on_a_batching_engine() -> None:
    # Throughput 10/s however many run at once (levels 1, 2, 4 taking 0.1, 0.2, 0.4 s each) with
    # four slots: up to four requests share the server (processor sharing), a fifth waits.
    levels = [closed_level(n, 10.0, [0.1 * n] * 1000) for n in (1, 2, 4)]
    model = QueueModel(parse_profile(profile(levels)).closed_loop, slots=4)
    assert model.saturation == pytest.approx(10.0)
    assert model.percentile(0.0, 0.5) == pytest.approx(0.1)
    # M/G/1-PS: the mean time in system is E[S] / (1 - rho) whatever the service distribution;
    # the sharing is cut at four, so allow for the few arrivals that find four running.
    rate = 5.0
    assert model.mean(rate) == pytest.approx(0.1 / (1 - 0.5), rel=0.05)
    # A request is slowed by those that arrive while it runs: latencies spread out, unlike M/D/1,
    # where an arrival that finds the server idle is served in exactly 0.1 s.
    assert model.cdf(rate, 0.1 + 1e-9) < 0.45
    md1 = QueueModel(parse_profile(profile(levels)).closed_loop, slots=1)
    assert md1.cdf(rate, 0.1 + 1e-9) == pytest.approx(0.5, abs=0.02)


def test_the_slots_default_to_where_throughput_stops_rising() -> None:
    samples = exponential_samples(0.1, 1000)
    levels = [closed_level(n, min(n, 4) * 10.0, [x * max(1, n / 4) for x in samples]) for n in (1, 2, 4, 8)]
    assert QueueModel(parse_profile(profile(levels)).closed_loop).slots == 4
    assert QueueModel(parse_profile(profile(levels)).closed_loop, slots=8).slots == 8


@pytest.mark.parametrize("load", [0.8, 0.9, 0.95])
def test_constant_service_queues_like_md1(load: float) -> None:
    # M/D/1 (Pollaczek-Khinchine): mean time in system = D + rho D / (2 (1 - rho)); the
    # heavy-traffic approximation is exact as rho -> 1 and 7% short at rho = 0.8.
    service = 0.1
    model = model_of(profile([closed_level(1, 1 / service, [service] * 1000)]))
    md1 = service + load * service / (2 * (1 - load))
    assert model.mean(load / service) == pytest.approx(md1, rel=0.08)
    assert model.mean(load / service) < 0.6 * model_of(mmc_profile(1, 1 / service)).mean(load / service)


def test_errors_follow_the_levels_error_shares() -> None:
    samples = exponential_samples(0.1, 1000)
    document = profile([closed_level(1, 10.0, samples), closed_level(2, 20.0, samples, errors=1000)])
    model = model_of(document)
    assert model.error_rate(0.0) == 0.0
    assert 0.0 < model.error_rate(10.0) < 0.5
    assert model.max_rate({0.95: 10.0}, error_cap=0.01) < model.max_rate({0.95: 10.0})


def test_a_profile_without_closed_loop_samples_is_refused() -> None:
    with pytest.raises(ProfileError):
        model_of(profile([]))
    with pytest.raises(ProfileError):
        parse_profile({"tool": "wrk", "levels": []})


def test_percentiles_are_nearest_rank() -> None:
    # Ten requests served alone in 0.1, 0.2, ..., 1.0 s: at no load the model's latencies are
    # theirs, and its p95 and p50 are the 10th and 5th (linear interpolation: 0.955 and 0.55).
    latencies = [0.1 * i for i in range(1, 11)]
    model = QueueModel(parse_profile(profile([closed_level(1, 10.0, latencies)])).closed_loop)
    assert model.percentile(0.0, 0.95) == pytest.approx(1.0)
    assert model.percentile(0.0, 0.5) == pytest.approx(0.5)
