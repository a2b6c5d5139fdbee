"""The ``scorecard:`` config section: what no request record can know, declared by the operator.

Facilities and power (kW per rack, cooling, lead times, the power budget), the declared workload
mix (real-time, batch, fine-tuning and training shares) and who owns incidents. Everything is
optional; the scorecard scores what is declared and says what is missing.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Facilities(_Strict):
    """Where the accelerators run: power density per rack, how it is cooled, the weeks it takes
    to get more capacity (hardware, power, space) and the power available to this service."""

    kw_per_rack: float | None = Field(None, gt=0)
    cooling: str | None = Field(None, min_length=1)
    lead_time_weeks: float | None = Field(None, ge=0)
    power_budget_kw: float | None = Field(None, gt=0)


class WorkloadMix(_Strict):
    """The share of accelerator time each kind of work takes; the shares add up to 1."""

    real_time: float = Field(0.0, ge=0, le=1)
    batch: float = Field(0.0, ge=0, le=1)
    fine_tuning: float = Field(0.0, ge=0, le=1)
    training: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _shares_add_up(self) -> WorkloadMix:
        total = self.real_time + self.batch + self.fine_tuning + self.training
        if not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(f"the shares must add up to 1, got {total:g}")
        return self


class ScorecardSection(_Strict):
    """Facts for the scorecard that no record holds (all optional)."""

    facilities: Facilities = Facilities()
    #: The declared workload mix; None: not declared.
    workloads: WorkloadMix | None = None
    #: Who answers incidents (a team or rota), beside each SLO's own owner.
    incident_owner: str | None = Field(None, min_length=1)
