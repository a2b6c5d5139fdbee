"""The queue model against queues whose answers are known in closed form (M/M/1, M/M/c)."""

from __future__ import annotations

import math

import pytest
from plan_profiles import (
    closed_level,
    erlang_c,
    exponential,
    mmc_percentile,
    mmc_profile,
    profile,
    quantile_samples,
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
    assert model.mean(rate) == pytest.approx(mean, rel=0.01)
    for q in (0.95, 0.99):
        assert model.percentile(rate, q) == pytest.approx(mmc_percentile(servers, service_rate, rate, q),
                                                          rel=0.01)


def test_highest_rate_within_slo_is_where_mm1_p95_meets_it() -> None:
    # M/M/1: time in system is Exp(μ - λ), so p95 <= s exactly while λ <= μ - ln(20) / s.
    model = model_of(mmc_profile(1, 10.0))
    assert model.max_rate({0.95: 0.5}) == pytest.approx(10 - math.log(20) / 0.5, rel=0.01)


def test_unstable_rates_have_no_finite_latency() -> None:
    model = model_of(mmc_profile(2, 5.0))
    assert model.saturation == 10.0
    assert math.isinf(model.percentile(10.0, 0.95))
    assert math.isinf(model.mean(12.0))
    assert model.error_rate(10.0) == 1.0


def test_a_tighter_slo_than_the_idle_latency_allows_no_rate() -> None:
    model = model_of(mmc_profile(4, 10.0))
    assert model.max_rate({0.95: 0.01}) == 0.0


def test_latency_interpolates_between_measured_levels() -> None:
    # Levels 1 and 3 with constant latencies 0.1 and 0.3: a state served like level 2 takes 0.2.
    document = profile([closed_level(1, 10.0, [0.1] * 100), closed_level(3, 10.0, [0.3] * 100)])
    model = model_of(document)
    assert model.percentile(0.0, 0.5) == pytest.approx(0.1, rel=1e-6)
    # Throughput 10 from one request on, constant service (beta 1/2): p(k) = (1-r) r^k with
    # r = (rate/10)^2; level 2 on finding one other.
    rate = 5.0
    assert model.queue_factor == pytest.approx(0.5)
    assert model.cdf(rate, 0.1) == pytest.approx(0.75, abs=1e-9)
    assert model.cdf(rate, 0.2) == pytest.approx(0.75 + 0.25 * 0.75, abs=1e-9)


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
    samples = quantile_samples(exponential(0.1), 1000)
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
