"""Helpers shared by the SLO tests."""

from __future__ import annotations

from switchgear.store.records import RequestRecord


def record(number: int, done_at: float, status: int = 200, model: str = "chat",
           latency: float = 0.05, ttft: float | None = 0.01,
           output_passed: bool | None = None) -> RequestRecord:
    """A request-log row of request ``r<number>`` that finished at ``done_at``."""
    received = done_at - latency
    return RequestRecord(
        request_id=f"r{number}", tenant="default", model=model, deployment="d", operation="chat",
        stream=False, received_at=received,
        first_token_at=None if ttft is None else received + ttft, done_at=done_at,
        prompt_tokens=1, completion_tokens=1, status=status, error_type=None, truncated=False,
        attempts=1, cost=0.0, output_passed=output_passed)
