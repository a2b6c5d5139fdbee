"""Faults: validation, patching, and what the seeded draws decide per request."""

from __future__ import annotations

import random

import pytest

from switchgear.errors import InvalidRequest
from switchgear.simulator.faults import Failure, FaultDraw, Faults


def test_faults_are_off_by_default_and_draw_nothing() -> None:
    rng = random.Random(1)
    state = rng.getstate()
    assert Faults().draw(rng, stream=True) == FaultDraw()
    assert rng.getstate() == state


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"reset_rate": -0.1}, "reset_rate"),
        ({"error_status": 200}, "error_status"),
        ({"spike_ms": -1}, "spike_ms"),
        ({"slowness": 1}, "slowness"),
        ({"refusal_rate": 2}, "refusal_rate"),
        ({"output_factor": 0}, "output_factor"),
        ({"output_factor": 1.5}, "output_factor"),
    ],
)
def test_invalid_faults_are_refused_naming_the_field(data: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        Faults.of(data)
    assert refused.value.param == param


def test_a_patch_changes_only_the_named_fields() -> None:
    faults = Faults(error_rate=0.5, error_status=503).patched({"hang_rate": 0.25})
    assert (faults.error_rate, faults.error_status, faults.hang_rate) == (0.5, 503, 0.25)


@pytest.mark.parametrize(
    ("faults", "failure"),
    [
        (Faults(reset_rate=1), Failure.RESET),
        (Faults(hang_rate=1), Failure.HANG),
        (Faults(error_rate=1), Failure.ERROR),
        (Faults(disconnect_rate=1), Failure.DISCONNECT),
    ],
)
def test_a_certain_fault_always_hits(faults: Faults, failure: Failure) -> None:
    rng = random.Random(0)
    assert {faults.draw(rng, stream=True).failure for _ in range(20)} == {failure}


def test_a_disconnect_only_hits_streams() -> None:
    assert Faults(disconnect_rate=1).draw(random.Random(0), stream=False).failure is None


def test_a_refusal_replaces_an_answer_only_when_nothing_failed() -> None:
    rng = random.Random(0)
    assert {Faults(refusal_rate=1).draw(rng, stream=False) for _ in range(5)} == {
        FaultDraw(refuse=True)}
    assert Faults(refusal_rate=1, error_rate=1).draw(rng, stream=False) == FaultDraw(
        failure=Failure.ERROR)


def test_a_spike_delays_by_spike_ms() -> None:
    draw = Faults(spike_rate=1, spike_ms=250).draw(random.Random(0), stream=False)
    assert draw == FaultDraw(delay_seconds=0.25)


def test_rates_are_shares_of_requests_and_repeat_with_the_seed() -> None:
    faults = Faults(error_rate=0.3)

    def failures(seed: int) -> list[Failure | None]:
        rng = random.Random(seed)
        return [faults.draw(rng, stream=False).failure for _ in range(2000)]

    drawn = failures(5)
    assert drawn == failures(5)
    assert 0.25 < drawn.count(Failure.ERROR) / len(drawn) < 0.35


@pytest.mark.parametrize(
    ("status", "error_type", "retry_after"),
    [(500, "api_error", None), (503, "api_error", 1.0), (429, "rate_limit_error", 1.0),
     (404, "invalid_request_error", None)],
)
def test_an_injected_error_has_the_status_and_openai_type(
    status: int, error_type: str, retry_after: float | None
) -> None:
    error = Faults(error_status=status).injected_error()
    assert error.status == status
    assert error.body()["error"]["type"] == error_type
    assert error.retry_after == retry_after
