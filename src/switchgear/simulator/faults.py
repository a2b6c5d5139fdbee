"""Faults a simulated model server injects on purpose, each drawn per request at its own rate,
and ways it answers worse without failing (refusals, shorter answers)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchgear.errors import InvalidRequest, SwitchgearError

#: Statuses that tell the client when to come back.
STATUSES_WITH_RETRY_AFTER = frozenset({429, 503})


class Failure(StrEnum):
    """How a request fails when a fault hits it."""

    RESET = "reset"  # the TCP connection is reset before any response byte
    HANG = "hang"  # no answer, ever, until the client gives up
    ERROR = "error"  # an HTTP error status with an OpenAI-shaped body
    DISCONNECT = "disconnect"  # a stream is cut after a few chunks, without [DONE]


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """What the faults decided for one request: an extra delay first, then maybe a failure, or
    else maybe a refusal instead of an answer."""

    delay_seconds: float = 0.0
    failure: Failure | None = None
    refuse: bool = False


class Faults(BaseModel):
    """Fault rates (probabilities per request, 0 to 1) and the parameters of each fault."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(0.0, ge=0, le=1, description="share of requests answered with "
                              "error_status")
    error_status: int = Field(500, ge=400, le=599, description="HTTP status of injected errors")
    spike_rate: float = Field(0.0, ge=0, le=1, description="share of requests delayed by spike_ms")
    spike_ms: float = Field(1000.0, ge=0, description="length of a latency spike")
    hang_rate: float = Field(0.0, ge=0, le=1, description="share of requests never answered")
    reset_rate: float = Field(0.0, ge=0, le=1, description="share of connections reset before "
                              "any response byte")
    disconnect_rate: float = Field(0.0, ge=0, le=1, description="share of streams cut after a "
                                   "few chunks")
    refusal_rate: float = Field(0.0, ge=0, le=1, description="share of answers replaced by a "
                                "refusal (\"I'm sorry, but I can't help with that.\")")
    output_factor: float = Field(1.0, gt=0, le=1, description="answers are this share of their "
                                 "drawn length (1: unchanged)")

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Faults:
        """Faults from a JSON object; unnamed fields take their defaults. Raises InvalidRequest."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None

    def patched(self, changes: Mapping[str, Any]) -> Faults:
        """These faults with the named fields changed. Raises InvalidRequest."""
        return Faults.of({**self.model_dump(), **changes})

    def draw(self, rng: random.Random, stream: bool) -> FaultDraw:
        """Decide this request's fate; a disconnect can only hit a stream."""
        delay = self.spike_ms / 1000 if _hits(rng, self.spike_rate) else 0.0
        chances = [
            (Failure.RESET, self.reset_rate),
            (Failure.HANG, self.hang_rate),
            (Failure.ERROR, self.error_rate),
            (Failure.DISCONNECT, self.disconnect_rate if stream else 0.0),
        ]
        for failure, rate in chances:
            if _hits(rng, rate):
                return FaultDraw(delay, failure)
        return FaultDraw(delay, refuse=_hits(rng, self.refusal_rate))

    def injected_error(self) -> InjectedError:
        """The error an ERROR fault answers with."""
        return InjectedError(self.error_status)


class InjectedError(SwitchgearError):
    """An error the simulator answers with on purpose, with whatever status it was told."""

    code = "simulated_fault"

    def __init__(self, status: int) -> None:
        super().__init__(
            f"Simulated fault: the model server answered {status}.",
            retry_after=1.0 if status in STATUSES_WITH_RETRY_AFTER else None,
        )
        self.status = status
        if status == 429:
            self.type = "rate_limit_error"
        elif status < 500:
            self.type = "invalid_request_error"


def _hits(rng: random.Random, rate: float) -> bool:
    # A zero rate draws nothing: with every fault off the random sequence is left untouched.
    return rate > 0 and rng.random() < rate
