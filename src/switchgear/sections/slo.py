"""SLO specs as the config declares them (in the spirit of OpenSLO): what is measured over which
requests, the target, the rolling window, who owns it and how its burn rate is alerted on."""

from __future__ import annotations

import math
import os
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from switchgear.sections.durations import parse_duration

#: Seconds, written as ``30d``, ``6h``, ``5m``, ``90s``, ``500ms`` or as a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]

Severity = Literal["page", "ticket"]

#: The gateway's latency histogram buckets, in seconds (telemetry/metrics.py): from a cache hit
#: (sub-millisecond) to a long generation. A latency SLO's threshold is one of them.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0, 120.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLI(_Strict):
    """What makes a request good.

    ``availability``: not failed with a 5xx status (500 internal error, 502 upstream failure after
    retries and fallbacks, 503 unavailable or shed, 504 timeout); 4xx answers and 499 (the client
    went away) are the client's doing and count as good. ``latency``: finished within
    ``threshold``, end to end (``e2e``, every request) or to the first token (``ttft``, requests
    that got one; the whole answer when not streamed). The threshold must be a bucket bound of the
    gateway's latency histograms, so that Prometheus can measure the same SLI. ``checks``: the
    answer passed every output guard check (requests no output check judged are not counted).
    """

    kind: Literal["availability", "latency", "checks"]
    measure: Literal["e2e", "ttft"] = "e2e"
    threshold: Duration | None = None

    @field_validator("threshold")
    @classmethod
    def _on_a_bucket(cls, threshold: float | None) -> float | None:
        if threshold is None:
            return None
        bound = next((b for b in LATENCY_BUCKETS if math.isclose(b, threshold)), None)
        if bound is None:
            raise ValueError(f"{threshold:g}s is not a latency bucket bound; use one of "
                             f"{', '.join(f'{b:g}' for b in LATENCY_BUCKETS)} seconds")
        return bound

    @model_validator(mode="after")
    def _threshold_for_latency(self) -> SLI:
        if self.kind != "latency" and self.threshold is not None:
            raise ValueError(f"an {self.kind} SLI has no threshold")
        if self.kind == "latency" and self.threshold is None:
            raise ValueError("a latency SLI needs a threshold")
        return self


class SLOScope(_Strict):
    """Which requests the SLI counts: all of them, or those matching every field given — a model
    alias, a deployment (the route that served the request), a tenant, a feature tag."""

    model: str | None = None
    deployment: str | None = None
    tenant: str | None = None
    feature: str | None = None

    def filters(self) -> dict[str, str]:
        """The fields given, by request-log column (= metric label) name."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class BurnRule(_Strict):
    """Alert at ``severity`` while the burn rate over ``long`` and over ``short`` both exceed
    ``burn_rate`` (a burn rate of 1 spends the budget exactly over the SLO's window)."""

    long: Duration
    short: Duration
    burn_rate: float = Field(gt=0)
    severity: Severity

    @model_validator(mode="after")
    def _short_within_long(self) -> BurnRule:
        if self.short >= self.long:
            raise ValueError("short must be shorter than long")
        return self


#: The SRE Workbook's multi-window, multi-burn-rate policy (chapter 5, "Alerting on SLOs").
WORKBOOK_POLICY: tuple[BurnRule, ...] = (
    BurnRule(long=3600, short=300, burn_rate=14.4, severity="page"),
    BurnRule(long=21600, short=1800, burn_rate=6, severity="page"),
    BurnRule(long=86400, short=7200, burn_rate=3, severity="ticket"),
    BurnRule(long=259200, short=21600, burn_rate=1, severity="ticket"),
)


class SLOAlerting(_Strict):
    """Where alerts go — a JSON POST, firing then resolved, to ``webhook_url`` or to the URL in
    the environment variable ``webhook_url_env`` (for URLs that carry a token); neither: shown
    only in ``switchgear slo status`` — and the burn-rate policy that raises them."""

    webhook_url: str | None = None
    webhook_url_env: str | None = Field(None, min_length=1)
    policy: list[BurnRule] = Field(default_factory=lambda: list(WORKBOOK_POLICY), min_length=1)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url

    @model_validator(mode="after")
    def _one_webhook(self) -> SLOAlerting:
        if self.webhook_url is not None and self.webhook_url_env is not None:
            raise ValueError("give webhook_url or webhook_url_env, not both")
        return self

    def webhook(self) -> str | None:
        """The webhook URL, read from the environment when named there; ValueError when that
        variable is unset or not an http(s) URL."""
        if self.webhook_url_env is None:
            return self.webhook_url
        url = os.environ.get(self.webhook_url_env)
        if url is None:
            raise ValueError(f"environment variable {self.webhook_url_env} "
                             "(webhook_url_env) is not set")
        return self._http_url(url)


class SLOConfig(_Strict):
    """One objective: ``target`` share of the requests in ``scope`` good by ``sli`` over the
    rolling ``window``; ``owner`` answers its incidents."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    owner: str = Field(min_length=1)
    description: str = ""
    sli: SLI
    scope: SLOScope = SLOScope()
    target: float = Field(gt=0, lt=1)
    window: Duration = 30 * 86400.0
    alerting: SLOAlerting = SLOAlerting()

    @property
    def error_budget(self) -> float:
        """The share of requests allowed to be bad."""
        return 1 - self.target


class SLOSection(_Strict):
    """The SLOs and how often they are evaluated (from the request log, by every replica).

    ``time_scale`` multiplies every window, the SLOs' and the burn-rate policies': below 1 it
    compresses time for drills and tests (0.001 turns 1h into 3.6s); ``evaluate_every`` is
    not scaled.
    """

    objectives: list[SLOConfig] = Field(default_factory=list)
    evaluate_every: Duration = 30.0
    time_scale: float = Field(1.0, gt=0, le=1)

    @field_validator("objectives")
    @classmethod
    def _unique_names(cls, objectives: list[SLOConfig]) -> list[SLOConfig]:
        names = [objective.name for objective in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"SLO names must be unique, got {names}")
        return objectives
