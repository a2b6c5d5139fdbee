"""Typed configuration: one YAML file, validated whole before anything starts.

Secrets never sit in the file: a deployment names the environment variable holding its API key
(``api_key_env``) or a header's value (``headers_env``) and the value is read when the backend is
built.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote, urlencode

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from switchgear.sections.guards import combine, load
from switchgear.sections.prices import builtin_price
from switchgear.sections.prompts import PromptTemplate, check_names
from switchgear.sections.scorecard import ScorecardSection
from switchgear.sections.slo import SLOSection
from switchgear.sections.tiers import TierConfig

BackendKind = Literal["embedded", "openai_http", "anthropic", "simulated"]
#: The kinds that talk HTTP to an upstream ``url`` (and may send it extra headers and a query).
HTTP_BACKENDS = frozenset({"openai_http", "anthropic"})
#: Headers the gateway sets on every upstream request, which a deployment's ``headers_env``
#: may not replace (the backend's own credential headers are refused apart, in ``_headers``).
GATEWAY_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                             "content-type", "accept", "traceparent", "tracestate"})
#: What an HTTP header's name may be made of (RFC 9110's token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: Characters a header's value may not hold: control characters but tab (CR/LF end the header).
HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

DEFAULT_ALIAS = "smollm2"


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the field and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def yaml_off(off: object) -> BeforeValidator:
    """Read YAML's ``off``/``no``/``false`` (all the boolean false in YAML 1.1) as the setting's
    own ``off`` value, so that ``cacheable: off`` means what it says."""
    return BeforeValidator(lambda value: off if value is False else value)


class Timeouts(_Strict):
    """Seconds to wait for an upstream: to connect, for the first streamed token, for each
    further streamed chunk, and for everything (a non-streamed answer has the total)."""

    connect: float = Field(5.0, gt=0)
    ttft: float = Field(60.0, gt=0)
    idle: float = Field(30.0, gt=0)
    total: float = Field(600.0, gt=0)


#: What a prompt-cache write costs per input token's price when the price does not say.
CACHE_WRITE_PREMIUM = 1.25


class Price(_Strict):
    """What a deployment costs: per million input, cached input and output tokens (an API), and
    per instance-hour for ``instances`` machines each serving ``concurrency`` requests at once
    (self-hosted). A request is charged its tokens plus its share of an instance's time (its
    latency / ``concurrency``); the instance time nobody used is the deployment's idle cost."""

    input_per_million: float = Field(0.0, ge=0)
    output_per_million: float = Field(0.0, ge=0)
    #: Input tokens the upstream served from its prompt cache; None: the input price.
    cached_input_per_million: float | None = Field(None, ge=0)
    #: Input tokens the upstream wrote to its prompt cache (Anthropic's
    #: cache_creation_input_tokens); None: 1.25 x the input price, Anthropic's premium for its
    #: 5-minute cache (no other upstream reports cache writes).
    cache_write_per_million: float | None = Field(None, ge=0)
    instance_per_hour: float = Field(0.0, ge=0)
    instances: int = Field(1, ge=1)
    concurrency: int = Field(1, ge=1)
    #: The fraction taken off the token prices of a request a batch line made (the Batch API
    #: runs them at the batch tier, as hosted providers discount batch work); instance time is
    #: charged in full.
    batch_discount: float = Field(0.0, ge=0, le=1)

    @property
    def cached_price(self) -> float:
        """The price per million cached input tokens."""
        if self.cached_input_per_million is None:
            return self.input_per_million
        return self.cached_input_per_million

    @property
    def cache_write_price(self) -> float:
        """The price per million input tokens written to the prompt cache."""
        if self.cache_write_per_million is None:
            return self.input_per_million * CACHE_WRITE_PREMIUM
        return self.cache_write_per_million

    @property
    def self_hosted(self) -> bool:
        """Whether the deployment is paid by the instance-hour."""
        return self.instance_per_hour > 0


class Capacity(_Strict):
    """What one instance of a deployment sustains within its SLO (for the marginal-cost
    estimate): requests per second and/or tokens (prompt + completion) per second, and/or a
    ``switchgear bench`` profile of one instance (a JSON file) that the planner's model sizes
    the load from, within ``slo_p95_s`` / ``slo_p99_s`` (default: the SLO the profile was
    benched with), predicting the latency there."""

    requests_per_s: float | None = Field(None, gt=0)
    tokens_per_s: float | None = Field(None, gt=0)
    profile: str | None = Field(None, min_length=1)
    slo_p95_s: float | None = Field(None, gt=0)
    slo_p99_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> Capacity:
        if self.requests_per_s is None and self.tokens_per_s is None and self.profile is None:
            raise ValueError("give requests_per_s, tokens_per_s or a bench profile")
        if self.profile is None and (self.slo_p95_s or self.slo_p99_s):
            raise ValueError("slo_p95_s and slo_p99_s are targets for the profile's model: "
                             "give the profile too")
        return self


class EmbeddedOptions(_Strict):
    """Settings of the embedded llama.cpp engine (the model file defaults to SmolLM2's GGUF).

    ``n_ctx`` is one sequence's context window; ``max_sequences`` sequences decode together in
    one batch; the KV cache holds ``kv_tokens`` tokens (default ``n_ctx * max_sequences``), one
    equal share per sequence unless ``shared_kv``; a step feeds at most ``step_tokens`` tokens
    (long prompts are read in chunks of what is left). While the engine runs, Python's GIL
    switch interval is at most ``gil_switch_interval_ms``: the engine's thread takes the GIL back
    after every llama.cpp call, and at Python's default (5 ms) it waits that long behind a busy
    event loop each time (benchmarks/engine: 8 streams through the gateway, 179 tok/s at 5 ms,
    273 at 0.5 ms).
    """

    model_path: str | None = None
    n_ctx: int = Field(2048, ge=128)
    n_threads: int | None = Field(None, ge=1)
    seed: int = 0
    max_sequences: int = Field(8, ge=1, le=64)
    kv_tokens: int | None = Field(None, ge=128)
    step_tokens: int = Field(256, ge=64)
    shared_kv: bool = False
    gil_switch_interval_ms: float = Field(0.5, gt=0, le=100)

    @property
    def kv_cache_tokens(self) -> int:
        """The KV cache's size in tokens: ``kv_tokens``, or a full window for every sequence."""
        return self.kv_tokens or self.n_ctx * self.max_sequences


class SimulatedOptions(_Strict):
    """Settings of the in-process simulated model server (the same model `simulate` serves)."""

    slots: int = Field(8, ge=1)
    ttft_ms: float = Field(20.0, ge=0)
    tpot_ms: float = Field(2.0, ge=0)
    mean_output_tokens: int = Field(32, ge=1)
    seed: int | None = 0


class AnthropicOptions(_Strict):
    """Settings of an ``anthropic`` deployment (Anthropic's Messages API at ``url``/v1/messages,
    keyed by ``api_key_env`` in ``x-api-key``): the ``anthropic-version`` header it sends, and
    the ``max_tokens`` it asks for when a request gives none (Anthropic requires one)."""

    version: str = Field("2023-06-01", pattern=r"^[0-9A-Za-z.-]+$")
    max_tokens: int = Field(4096, ge=1)


class DeploymentConfig(_Strict):
    """One place a model alias can be served from.

    An HTTP deployment (``openai_http``, ``anthropic``) may send extra headers whose values come
    from environment variables (``headers_env``: header name → variable, for an ``api-key`` or a
    custom auth header) and extra query parameters (``query``: name → value, ``query_env``: name
    → variable): Azure OpenAI is ``url`` ending in ``/openai/deployments/NAME``,
    ``headers_env: {api-key: AZURE_OPENAI_KEY}`` and ``query: {api-version: "2024-10-21"}``.
    With no ``price``, a deployment whose ``model`` is in the built-in price table
    (sections/prices.yaml) is charged the table's prices.
    """

    name: str = Field(min_length=1)
    backend: BackendKind
    url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    weight: float = Field(1.0, gt=0)
    max_concurrency: int = Field(64, ge=1)
    #: Where ``max_concurrency`` holds: on each replica (``replica``, free), or across every
    #: replica sharing ``limits.state_url`` (``fleet``: a Redis semaphore with leases).
    max_concurrency_scope: Literal["replica", "fleet"] = "replica"
    context_window: int | None = Field(None, ge=1)
    timeouts: Timeouts = Timeouts()
    price: Price = Price()
    #: Sustained throughput of one instance within its SLO; None: unknown.
    capacity: Capacity | None = None
    embedded: EmbeddedOptions = EmbeddedOptions()
    simulated: SimulatedOptions = SimulatedOptions()
    #: What the active health check of an HTTP deployment asks: ``models`` (GET /models)
    #: or ``completion`` (a one-token completion: a server that lists models but cannot
    #: generate fails it). Any answer but a 2xx is a failed check.
    health_check: Literal["models", "completion"] = "models"
    #: Extra headers of each upstream request: header name → the variable holding its value.
    headers_env: dict[str, str] = Field(default_factory=dict)
    #: Extra query parameters of each upstream request: name → value, and name → variable.
    query: dict[str, str] = Field(default_factory=dict)
    query_env: dict[str, str] = Field(default_factory=dict)
    anthropic: AnthropicOptions = AnthropicOptions()
    _builtin_price: Price | None = PrivateAttr(None)

    def model_post_init(self, context: Any, /) -> None:
        """Look ``model`` up in the built-in price table when no ``price`` is given."""
        if "price" not in self.model_fields_set and self.backend in HTTP_BACKENDS and self.model:
            fields = builtin_price(self.model)
            if fields is not None:
                self._builtin_price = Price(**fields)

    @property
    def charged_price(self) -> Price:
        """What the deployment is charged at: its ``price`` when the config gives one, else the
        built-in table's for its ``model`` (an HTTP deployment of a known hosted model), else
        nothing (``price``'s zero default)."""
        return self._builtin_price or self.price

    @model_validator(mode="after")
    def _url_for_http(self) -> DeploymentConfig:
        if self.backend in HTTP_BACKENDS and not self.url:
            raise ValueError(f"an {self.backend} deployment needs a url")
        if self.backend not in HTTP_BACKENDS and (self.headers_env or self.query
                                                  or self.query_env):
            raise ValueError("headers_env, query and query_env are for HTTP deployments "
                             f"({', '.join(sorted(HTTP_BACKENDS))})")
        own = GATEWAY_HEADERS | self._credential_headers()
        for name in self.headers_env:
            if not HEADER_NAME.match(name):
                raise ValueError(f"headers_env: {name!r} is not an HTTP header name")
            if name.lower() in own:
                raise ValueError(f"headers_env: {name} is a header the gateway sets itself "
                                 f"({', '.join(sorted(own))})")
        if self.health_check == "completion" and not self.model:
            raise ValueError("health_check: completion needs model (the name the upstream "
                             "serves, which the check asks for)")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/") if url else url

    def _credential_headers(self) -> frozenset[str]:
        """The headers the backend sets for its own credential and protocol."""
        if self.backend == "anthropic":
            return frozenset({"x-api-key", "anthropic-version"})
        return frozenset({"authorization"}) if self.api_key_env else frozenset()

    def api_key(self) -> str | None:
        """The API key from the named environment variable, if any."""
        if not self.api_key_env:
            return None
        return self._header_value("api_key_env", self.api_key_env)

    def upstream_headers(self) -> dict[str, str]:
        """The extra headers (``headers_env``), each value read from its variable."""
        return {name: self._header_value(f"headers_env.{name}", variable)
                for name, variable in self.headers_env.items()}

    def upstream_query(self) -> str:
        """The extra query string (``query`` and ``query_env``, percent-encoded; "" for none)."""
        values = {**self.query, **{name: self._env_value(f"query_env.{name}", variable)
                                   for name, variable in self.query_env.items()}}
        return urlencode(values, quote_via=quote)

    def _env_value(self, setting: str, variable: str) -> str:
        value = os.environ.get(variable)
        if value is None:
            raise ConfigError(f"deployment {self.name!r}: environment variable {variable} "
                              f"({setting}) is not set")
        return value

    def _header_value(self, setting: str, variable: str) -> str:
        """A variable's value to be sent in a header: never one that could end the header
        (CR, LF, other control characters) or that HTTP cannot carry (beyond Latin-1); the
        error names the variable, never its value."""
        value = self._env_value(setting, variable)
        if HEADER_VALUE_FORBIDDEN.search(value) or not _latin1(value):
            raise ConfigError(f"deployment {self.name!r}: environment variable {variable} "
                              f"({setting}) holds characters a header cannot carry (control "
                              "characters such as CR or LF, or beyond Latin-1)")
        return value

    def secret_variables(self) -> tuple[str, ...]:
        """The environment variables whose values this deployment sends to its ``url``."""
        return tuple(variable for variable in (self.api_key_env, *self.headers_env.values(),
                                               *self.query_env.values()) if variable)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


PolicyName = Literal["weighted", "least_outstanding", "latency", "cost", "priority"]


class Variant(_Strict):
    """One arm of an experiment: another alias and its share of the traffic (0: none, as a
    canary the canary guard rolled back is left)."""

    model: str = Field(min_length=1)
    weight: float = Field(ge=0)
    canary: bool = False


class CanaryGuard(_Strict):
    """When a canary is rolled back: its error rate or p95 latency worse than the baseline's by
    more than these margins, once both have ``min_samples`` requests in the last ``window_s``."""

    error_rate_margin: float = Field(0.05, ge=0, le=1)
    p95_margin: float = Field(0.5, ge=0)
    min_samples: int = Field(50, ge=1)
    window_s: float = Field(300.0, gt=0)


class HedgeConfig(_Strict):
    """Hedged requests for an alias: once an attempt has waited ``after_ms`` for its first token
    (None: the alias's recent p95 time to first token, once 20 answers are known), a second one
    goes to another deployment; the first answer wins and the other is cancelled. Each hedge
    spends a retry from the budget and counts toward ``max_attempts``."""

    after_ms: float | None = Field(None, gt=0)


class ModelConfig(_Strict):
    """A model alias clients ask for: deployments that serve it, or variants that split it."""

    deployments: list[DeploymentConfig] = Field(default_factory=list)
    policy: PolicyName = "weighted"
    #: The latency signal of the latency and cost policies: time to first token, or the whole.
    latency_signal: Literal["ttft", "total"] = "ttft"
    #: The cost policy takes the cheapest deployment whose latency is within this target.
    latency_target_ms: float | None = Field(None, gt=0)
    #: Aliases to try, in order, when this one fails, is overloaded or its context is too short.
    fallbacks: list[str] = Field(default_factory=list)
    #: Hedged requests (a second attempt elsewhere for the slow tail); None: never.
    hedge: HedgeConfig | None = None
    variants: list[Variant] = Field(default_factory=list)
    #: What keeps a client on one variant: its ``user`` field, its API key, or nothing.
    sticky: Annotated[Literal["user", "key", "none"], yaml_off("none")] = "user"
    canary_guard: CanaryGuard = CanaryGuard()

    @model_validator(mode="after")
    def _deployments_or_variants(self) -> ModelConfig:
        if bool(self.deployments) == bool(self.variants):
            raise ValueError("give either deployments or variants (an experiment), not both")
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique, got {names}")
        if sum(v.canary for v in self.variants) > 1:
            raise ValueError("at most one variant can be the canary")
        if any(v.canary for v in self.variants) and len(self.variants) < 2:
            raise ValueError("a canary needs a baseline variant beside it")
        if self.variants and not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        if self.hedge is not None and len(self.deployments) < 2:
            raise ValueError("hedge needs two deployments or more (a hedge goes to another)")
        return self


class RetryConfig(_Strict):
    """How failed attempts are retried: how often, how far apart, and within what budget."""

    max_attempts: int = Field(3, ge=1)
    #: Retries may be at most this share of requests (plus ``budget_min_per_second``), as in
    #: Envoy's and gRPC's retry budgets, so a failing fleet does not face a retry storm.
    budget_ratio: float = Field(0.2, ge=0)
    budget_min_per_second: float = Field(5.0, ge=0)
    backoff_base_ms: float = Field(10.0, ge=0)
    backoff_max_ms: float = Field(500.0, ge=0)


class OutlierConfig(_Strict):
    """Passive health: when a deployment is ejected, and for how long."""

    consecutive_failures: int = Field(5, ge=1)
    error_ratio: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(20, ge=1)
    window_s: float = Field(10.0, gt=0)
    base_ejection_s: float = Field(2.0, gt=0)
    max_ejection_s: float = Field(60.0, gt=0)
    #: Seconds over which a readmitted deployment ramps from a tenth of its share of traffic to
    #: all of it (Envoy's slow start); 0: at once.
    slow_start_s: float = Field(10.0, ge=0)


class RoutingConfig(_Strict):
    """Resilience settings shared by every alias."""

    retry: RetryConfig = RetryConfig()
    outlier: OutlierConfig = OutlierConfig()
    #: Seconds between active health checks of each deployment; None (or off) turns them off.
    health_check_interval_s: Annotated[float | None, yaml_off(None)] = Field(5.0, gt=0)
    #: How long a request waits for a slot at a full deployment before spilling to the next.
    queue_timeout_ms: float = Field(50.0, ge=0)


class ServerConfig(_Strict):
    """Where the gateway listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: The largest file POST /v1/files accepts (a Batch API input: OpenAI's limit is 200 MB).
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    #: All request headers together (JSON nesting is capped at 1024 levels by the parser).
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    #: Connections open at once (clamped at start to half the open-file limit); when full, a
    #: new connection evicts the oldest one still sending its headers, or is closed at once.
    max_connections: int = Field(10_000, ge=1)
    #: Connections open at once from one client address; more are closed at once. Behind a
    #: load balancer every connection has its address: raise this, or set it to max_connections.
    max_connections_per_client: int = Field(1024, ge=1)
    #: Seconds a connection has to send a request's complete headers (then 408 and closed).
    header_timeout_s: float = Field(10.0, gt=0)
    #: Seconds a request has to send its complete body once its headers are in (then closed).
    body_timeout_s: float = Field(30.0, gt=0)
    #: Seconds an idle keep-alive connection is kept open between requests.
    keepalive_timeout_s: float = Field(5.0, gt=0)
    #: Seconds a replica keeps listening and serving after SIGTERM/SIGINT while /readyz answers
    #: 503 "draining" and every response closes its connection, so load balancers move away
    #: before it stops accepting; a second signal ends it early.
    drain_grace_s: float = Field(5.0, ge=0)
    #: Seconds, once it stops accepting, that requests and streams in flight have to finish
    #: before they are cut off (their records are written either way).
    shutdown_timeout_s: float = Field(30.0, gt=0)


def url_from_env(data: Any, url: str, env: str) -> Any:
    """``data`` (a section as given) with ``url`` set from the environment variable its ``env``
    setting names, when it names one that is set: a URL holding a password is then referenced by
    name, never written in the file (an unset one is reported at start, with every other)."""
    if isinstance(data, dict) and isinstance(data.get(env), str):
        value = os.environ.get(data[env])
        if value is not None:
            return {**data, url: value}
    return data


class StoreConfig(_Strict):
    """Where request records go: ``sqlite:///path`` (default) or ``postgresql://...``;
    ``url_env``: the environment variable holding the URL instead (it wins over ``url``)."""

    url: str = "sqlite:///switchgear.db"
    url_env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _url_from_env(cls, data: Any) -> Any:
        return url_from_env(data, "url", "url_env")
    #: Store prompts and completions with the records (redacted: emails, phone numbers, card
    #: numbers, API keys and tokens). Off by default: only counts and times are kept.
    log_content: bool = False
    batch_size: int = Field(256, ge=1)
    flush_interval_ms: int = Field(200, ge=1)
    #: Records the writer holds at most (queued and being written); while it is full, as when
    #: the store is down, new records are dropped and counted, with one ERROR per spell.
    queue_size: int = Field(100_000, ge=1)
    #: Days request records are kept (None: for ever). Older ones are folded into hourly
    #: rollups (cost and token sums the cost report reads) and removed: whole daily partitions
    #: on PostgreSQL, chunks of rows on SQLite.
    retention_days: int | None = Field(None, ge=1)
    #: Days the hourly rollups are kept (None: for ever); at least ``retention_days``.
    rollup_retention_days: int | None = Field(None, ge=1)
    #: Days a response stored by /v1/responses (``store: true``) is kept and can be continued
    #: (``previous_response_id``), read or deleted (None: for ever).
    responses_retention_days: int | None = Field(30, ge=1)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite://, postgresql:// or postgres://")
        return url

    @model_validator(mode="after")
    def _rollups_outlive_rows(self) -> StoreConfig:
        if self.rollup_retention_days is not None and (
                self.retention_days is None or self.rollup_retention_days < self.retention_days):
            raise ValueError("rollup_retention_days must be at least retention_days (rollups "
                             "stand for the rows retention removed)")
        return self


class LimitValues(_Strict):
    """Requests and tokens per minute; None leaves that dimension unlimited."""

    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)


class BudgetValues(_Strict):
    """Spending limits in currency per UTC day and month (None: unlimited); at ``soft`` of a
    limit an alert is logged once per period, at the limit requests are refused (429)."""

    daily: float | None = Field(None, ge=0)
    monthly: float | None = Field(None, ge=0)
    soft: float = Field(0.8, gt=0, le=1)


class BudgetsConfig(_Strict):
    """Budgets per key (the same for every key) and per tenant."""

    per_key: BudgetValues | None = None
    tenants: dict[str, BudgetValues] = Field(default_factory=dict)


class LimitsConfig(_Strict):
    """Rate limits, enforced together (a request must fit all that apply to it): every key's,
    its tenant's and its model's; and spending budgets. State is in-process, or in Redis for
    replicas."""

    #: ``redis://host:port/db`` to share limits and budgets across replicas; None: this process.
    state_url: str | None = None
    #: The environment variable holding ``state_url`` instead (a Redis with a password).
    state_url_env: str | None = None
    #: Prefix of every Redis key (separates gateways, or test runs, sharing one Redis).
    state_prefix: str = "switchgear:"
    #: Seconds a fleet-wide place (``max_concurrency_scope``/``capacity_scope: fleet``) outlives
    #: a replica that stopped renewing it (one that died): its capacity returns after this.
    fleet_lease_s: float = Field(10.0, gt=0)
    per_key: LimitValues = LimitValues()
    tenants: dict[str, LimitValues] = Field(default_factory=dict)
    models: dict[str, LimitValues] = Field(default_factory=dict)
    budgets: BudgetsConfig = BudgetsConfig()

    @model_validator(mode="before")
    @classmethod
    def _url_from_env(cls, data: Any) -> Any:
        return url_from_env(data, "state_url", "state_url_env")

    @field_validator("state_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return redis_url(url)


#: Which requests the cache may answer: ``deterministic`` (temperature 0, or a seed; all
#: embeddings), ``all`` (any, sampling included) or ``off``.
Cacheable = Annotated[Literal["deterministic", "all", "off"], yaml_off("off")]


class CacheConfig(_Strict):
    """The exact response cache, per tenant unless ``shared_across_tenants``; in this process, or
    in Redis at ``url`` so that replicas share answers. What may be cached is ``cacheable``,
    overridden per model alias (``routes``) and per API key id (``keys``; a key wins)."""

    enabled: bool = True
    url: str | None = None
    #: The environment variable holding ``url`` instead (a Redis with a password).
    url_env: str | None = None
    prefix: str = "switchgear:"
    ttl_s: float = Field(300.0, gt=0)
    max_entries: int = Field(10_000, ge=1)
    shared_across_tenants: bool = False
    cacheable: Cacheable = "deterministic"
    routes: dict[str, Cacheable] = Field(default_factory=dict)
    keys: dict[str, Cacheable] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _url_from_env(cls, data: Any) -> Any:
        return url_from_env(data, "url", "url_env")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return redis_url(url)


#: What a guard does when its check objects: refuse (400, nothing reaches the model, or the
#: answer is withheld), rewrite and continue, or only record it.
GuardAction = Literal["block", "redact", "flag"]
#: Checks that can rewrite what they found.
REDACTING_CHECKS = frozenset({"pii", "patterns", "custom"})
#: Checks that only make sense on an answer.
OUTPUT_ONLY_CHECKS = frozenset({"json_schema", "empty", "truncated", "refusal"})


class GuardCheckConfig(_Strict):
    """One check and its action. ``patterns`` (regular expressions) and ``terms`` (whole words)
    are for ``patterns``; ``max_chars``/``max_messages`` for ``size``; ``path``
    (``module:attribute``) and ``whole`` for ``custom``."""

    check: Literal["pii", "patterns", "injection", "size", "json_schema", "empty", "truncated",
                   "refusal", "custom"]
    action: GuardAction = "flag"
    name: str | None = None
    patterns: list[str] = Field(default_factory=list)
    terms: list[str] = Field(default_factory=list)
    max_chars: int | None = Field(None, ge=1)
    max_messages: int | None = Field(None, ge=1)
    path: str | None = None
    whole: bool = False

    @model_validator(mode="after")
    def _complete(self) -> GuardCheckConfig:
        if self.action == "redact" and self.check not in REDACTING_CHECKS:
            raise ValueError(f"{self.check} cannot redact; use block or flag")
        if self.check == "patterns":
            if not self.patterns and not self.terms:
                raise ValueError("patterns needs patterns or terms")
            combine(self.patterns, self.terms)  # the very expression that will run
        if self.check == "size" and self.max_chars is None and self.max_messages is None:
            raise ValueError("size needs max_chars or max_messages")
        if self.check == "custom":
            if self.path is None:
                raise ValueError("custom needs path: module:attribute")
            load(self.path)  # the check's code, imported now
        return self

    @property
    def label(self) -> str:
        """The check's name in records and metrics."""
        if self.name:
            return self.name
        return self.path.rpartition(":")[2] if self.check == "custom" and self.path else self.check


class GuardList(_Strict):
    """The checks run on what goes in, and on what comes out."""

    input: list[GuardCheckConfig] = Field(default_factory=list)
    output: list[GuardCheckConfig] = Field(default_factory=list)

    @field_validator("input")
    @classmethod
    def _input_checks(cls, checks: list[GuardCheckConfig]) -> list[GuardCheckConfig]:
        for check in checks:
            if check.check in OUTPUT_ONLY_CHECKS:
                raise ValueError(f"{check.check} checks answers: put it under output")
        return checks


class GuardsConfig(GuardList):
    """Guards for every request, replaced per model alias (``routes``) or per API key id
    (``keys``; a key's list wins over its route's)."""

    routes: dict[str, GuardList] = Field(default_factory=dict)
    keys: dict[str, GuardList] = Field(default_factory=dict)


class LedgerConfig(_Strict):
    """How costs are reported: the ISO 4217 currency of every price, and the billing account
    and provider names the FOCUS export gives."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    billing_account: str = Field("switchgear", min_length=1)
    provider: str = Field("Switchgear", min_length=1)


class BatchConfig(_Strict):
    """The batch runner (batch/runner.py): it sends the lines of the Batch API's batches through
    the pipeline at the batch tier, only into spare capacity. Lines are claimed ``claim_size``
    at a time with a lease of ``lease_s`` seconds (renewed while a line runs; a replica that
    dies leaves them to others once it ends); at most ``max_share`` of each deployment's
    ``max_concurrency`` and ``max_in_flight`` lines per replica run at once, and none while an
    interactive or standard request waits, after which the runner backs off (from
    ``poll_interval_s``, doubling, up to ``max_backoff_s``). ``reserve`` of the places stays
    free for interactive and standard peaks: the runner keeps it of the deployments'
    ``max_concurrency`` together, and the priority gate keeps it from every batch-tier request
    (the batch tier's ``headroom`` is at least that share of ``tiers.capacity``), since a running
    batch request holds its place until it ends and an interactive one that finds every place
    taken would wait for one."""

    enabled: bool = True
    lease_s: float = Field(60.0, gt=0)
    max_share: float = Field(0.5, gt=0, le=1)
    reserve: float = Field(0.3, ge=0, lt=1)
    poll_interval_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(5.0, gt=0)
    max_in_flight: int = Field(32, ge=1)
    claim_size: int = Field(16, ge=1)


class QualityMargins(_Strict):
    """How far a quality signal must move before it counts as a shift: absolute for rates
    (0.05 = five percentage points), relative for the mean output length (0.25 = 25%)."""

    refusal_rate: float = Field(0.05, gt=0, le=1)
    empty_rate: float = Field(0.05, gt=0, le=1)
    schema_valid_rate: float = Field(0.05, gt=0, le=1)
    guard_flag_rate: float = Field(0.05, gt=0, le=1)
    #: The share of answers cut by the token limit (finish_reason ``length``).
    length_cut_rate: float = Field(0.10, gt=0, le=1)
    output_tokens: float = Field(0.25, gt=0)


class QualityConfig(_Strict):
    """Quality signals and their change detector: every ``evaluate_every_s`` the last
    ``recent_s`` seconds are compared with the ``baseline_s`` seconds before them, per route,
    deployment and served alias; a signal has shifted when it got worse by more than its margin
    AND the difference is significant at ``confidence`` (one-sided: Fisher's exact test for
    rates, Welch's test for the mean output length), with ``min_samples`` answers in each window.
    A shift on a canary arm rolls the canary back when ``canary_rollback``.

    The confidence is per test, and the detector runs many (each group, signal and evaluation):
    at 0.99999 a day of 10 groups evaluated every 30 s expects well under one false
    alarm, while a real shift of the size the margins name clears it within a window."""

    enabled: bool = True
    recent_s: float = Field(300.0, gt=0)
    baseline_s: float = Field(3600.0, gt=0)
    #: Width of the time buckets answers are counted in (windows are whole buckets).
    bucket_s: float = Field(10.0, gt=0)
    min_samples: int = Field(100, ge=2)
    confidence: float = Field(0.99999, gt=0.5, lt=1)
    evaluate_every_s: float = Field(30.0, gt=0)
    margins: QualityMargins = QualityMargins()
    canary_rollback: bool = True

    @model_validator(mode="after")
    def _windows_hold_buckets(self) -> QualityConfig:
        if self.bucket_s > min(self.recent_s, self.baseline_s):
            raise ValueError("bucket_s must not be longer than recent_s or baseline_s")
        return self


class AuthConfig(_Strict):
    """Who may call: ``auto`` requires API keys unless the gateway listens on loopback only with
    no admin key set and no key created yet (the zero-setup default, announced at start-up);
    ``required`` always; ``open`` never (refused on a non-loopback address)."""

    mode: Literal["auto", "required", "open"] = "auto"
    #: The environment variable whose value is the bootstrap admin key (never stored).
    admin_key_env: str = "SWITCHGEAR_ADMIN_KEY"


class TelemetryConfig(_Strict):
    """Metrics labels and traces. Spans are exported (OTLP over HTTP, protobuf) only when
    ``otlp_endpoint`` is set; without it the trace id is still made, propagated upstream,
    returned in ``x-trace-id`` and logged with the record, at almost no cost."""

    #: The collector's OTLP/HTTP base URL (``/v1/traces`` is added unless the URL ends in it).
    otlp_endpoint: str | None = None
    #: The ``service.name`` resource attribute of exported spans.
    service_name: str = "switchgear"
    #: Share of new traces exported; a client's ``traceparent`` keeps its own sampled flag.
    sample_ratio: float = Field(1.0, ge=0, le=1)
    #: Distinct values kept per metrics label (model, deployment, tenant, feature); more read
    #: 'other', so a flood of tenants or feature tags cannot blow up the metrics.
    max_label_values: int = Field(100, ge=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        url = url.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"


#: Sections a running gateway cannot change: a change to them needs a restart.
RESTART_SECTIONS = ("server", "store", "auth", "telemetry")

#: Sections whose changes need a second person's approval unless configured otherwise.
DEFAULT_APPROVAL = ("models", "routing", "limits", "tiers", "cache", "guards", "slo", "ledger",
                    "quality", "prompts", "scorecard")


#: The roles that may be allowed to break glass.
BreakGlassRole = Literal["admin", "operator"]
ADMIN_ROLE: BreakGlassRole = "admin"


class GovernanceConfig(_Strict):
    """Config changes and the audit trail (governance/).

    ``approval_required``: the top-level sections whose changes need approval by someone other
    than their author (changing this list always does); ``poll_interval_s``: how often each
    replica looks for a newly applied config version.

    The audit trail's key is the value of the environment variable ``audit_secret_env`` (at
    least 32 characters; every replica and ``switchgear audit verify`` need the same; read at
    start-up). Without it, a gateway on a non-loopback address refuses to start; on loopback one
    is generated once and kept, mode 0600, in ``<sqlite file>.audit-key``
    (``switchgear.audit-key`` in the working directory for PostgreSQL)."""

    approval_required: list[str] = Field(default_factory=lambda: list(DEFAULT_APPROVAL))
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    audit_secret_env: str = "SWITCHGEAR_AUDIT_SECRET"
    #: An admin key's access is recorded at its first call, then at most once per this many
    #: seconds per client address, with the number of calls in between (0: every call).
    audit_access_interval_s: float = Field(300.0, ge=0)
    #: The key roles that may break glass (apply a change without its approval). A change that
    #: adds or re-points an upstream carrying a credential is break-glassed by admins only.
    break_glass_roles: list[BreakGlassRole] = Field(default_factory=lambda: [ADMIN_ROLE])
    #: The environment variables a config may name as a secret sent out (``api_key_env``,
    #: ``webhook_url_env``, every ``*_env`` setting with no default): shell-style patterns.
    #: The gateway's own secrets (``SWITCHGEAR_*``, ``auth.admin_key_env``, ``audit_secret_env``)
    #: are refused whatever this says.
    upstream_env: list[str] = Field(default_factory=lambda: ["*"])


class Config(_Strict):
    """The whole gateway configuration."""

    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    routing: RoutingConfig = RoutingConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    #: Priority tiers and shedding (admission/tiers.py); None: no gate.
    tiers: TierConfig | None = None
    cache: CacheConfig = CacheConfig()
    guards: GuardsConfig = GuardsConfig()
    #: Service level objectives, their error budgets and burn-rate alerts (slo/).
    slo: SLOSection = SLOSection()
    telemetry: TelemetryConfig = TelemetryConfig()
    ledger: LedgerConfig = LedgerConfig()
    quality: QualityConfig = QualityConfig()
    governance: GovernanceConfig = GovernanceConfig()
    #: The Batch API's runner: lease, share of capacity, pace (batch/runner.py).
    batch: BatchConfig = BatchConfig()
    #: Managed prompt templates by name (sections/prompts.py); a chat request may name one.
    prompts: dict[str, PromptTemplate] = Field(default_factory=dict)
    #: Facts for `switchgear scorecard` that no record holds: facilities, workload mix, owners.
    scorecard: ScorecardSection = ScorecardSection()
    models: dict[str, ModelConfig] = Field(
        default_factory=lambda: {
            DEFAULT_ALIAS: ModelConfig(
                deployments=[DeploymentConfig(name="embedded", backend="embedded")]
            )
        }
    )

    @model_validator(mode="after")
    def _open_only_on_loopback(self) -> Config:
        if self.auth.mode == "open" and not is_loopback(self.server.host):
            raise ValueError(f"auth.mode open is only allowed on a loopback address, "
                             f"not {self.server.host}")
        return self

    @model_validator(mode="after")
    def _routes_are_aliases(self) -> Config:
        for section, aliases in (("cache", self.cache.routes), ("guards", self.guards.routes)):
            for alias in aliases:
                if alias not in self.models:
                    raise ValueError(f"{section}.routes names {alias!r}, which is not a model "
                                     "alias")
        return self

    @model_validator(mode="after")
    def _approval_sections_exist(self) -> Config:
        unknown = [name for name in self.governance.approval_required
                   if name not in type(self).model_fields]
        if unknown:
            raise ValueError(f"governance.approval_required names {unknown}, which are not "
                             "config sections")
        return self

    @model_validator(mode="after")
    def _env_not_own_secrets(self) -> Config:
        for where, variable in _env_settings(self, ""):
            problem = env_refusal(self, variable)
            if problem:
                raise ValueError(f"{where}: {problem}")
        return self

    @model_validator(mode="after")
    def _fleet_needs_state(self) -> Config:
        if self.limits.state_url is None:
            fleet = [f"models.{alias}.deployments.{d.name}.max_concurrency_scope"
                     for alias, model in self.models.items() for d in model.deployments
                     if d.max_concurrency_scope == "fleet"]
            if self.tiers is not None and self.tiers.capacity_scope == "fleet":
                fleet.append("tiers.capacity_scope")
            if fleet:
                raise ValueError(f"{', '.join(fleet)}: fleet scope needs limits.state_url (the "
                                 "shared-state Redis that holds the fleet's places)")
        return self

    @model_validator(mode="after")
    def _slo_models_exist(self) -> Config:
        for number, objective in enumerate(self.slo.objectives):
            model = objective.scope.model
            if model is not None and model not in self.models:
                raise ValueError(f"slo.objectives.{number}.scope.model: {model!r} is not a "
                                 "model alias")
        return self

    @field_validator("prompts")
    @classmethod
    def _prompt_names(cls, prompts: dict[str, PromptTemplate]) -> dict[str, PromptTemplate]:
        check_names(prompts)
        return prompts

    @field_validator("models")
    @classmethod
    def _some_models(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        if not models:
            raise ValueError("at least one model alias is needed")
        for alias, model in models.items():
            for other in [*model.fallbacks, *(v.model for v in model.variants)]:
                if other not in models:
                    raise ValueError(f"{alias} refers to {other!r}, which is not a model alias")
                if other == alias:
                    raise ValueError(f"{alias} refers to itself")
                if models[other].variants:
                    raise ValueError(f"{alias} refers to {other!r}, which is itself an experiment")
        return models


#: The prefix of the environment variables the gateway reads for itself.
OWN_ENV_PREFIX = "SWITCHGEAR_"


def own_secrets(config: Config) -> set[str]:
    """The environment variables holding the gateway's own secrets (besides ``SWITCHGEAR_*``)."""
    return {config.auth.admin_key_env, config.governance.audit_secret_env}


def env_refusal(config: Config, variable: str) -> str | None:
    """Why ``config`` may not name ``variable`` as a secret it sends out; None when it may."""
    if variable.upper().startswith(OWN_ENV_PREFIX) or variable in own_secrets(config):
        return (f"{variable} is one of the gateway's own secrets (SWITCHGEAR_*, "
                "auth.admin_key_env, governance.audit_secret_env) and is never sent anywhere")
    allowed = config.governance.upstream_env
    if not any(fnmatch.fnmatchcase(variable, pattern) for pattern in allowed):
        return (f"{variable} is not allowed by governance.upstream_env "
                f"({', '.join(allowed) or 'nothing'})")
    return None


def redis_url(url: str | None) -> str | None:
    """``url`` if it names a Redis server (or is None); otherwise a ValueError saying why."""
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return url


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


def missing_environment(config: BaseModel) -> list[str]:
    """Every environment variable a ``*_env`` setting of ``config`` names that is not set, as
    ``VARIABLE (the.setting)``; settings with a name by default (optional ones) are left out."""
    return [f"{variable} ({where})" for where, variable in _env_settings(config, "")
            if variable not in os.environ]


def unset_environment(config: BaseModel) -> str | None:
    """``missing_environment`` in one sentence for an error; None when nothing is missing."""
    missing = missing_environment(config)
    return f"environment variables not set: {', '.join(missing)}" if missing else None


def env_settings(config: BaseModel) -> list[tuple[str, str]]:
    """(setting path, variable) for each ``*_env`` setting with no default that ``config``
    gives: the variables whose secrets it sends out (upstream keys, webhook URLs)."""
    return list(_env_settings(config, ""))


def _env_settings(value: object, where: str) -> Iterator[tuple[str, str]]:
    """(setting path, variable) for each ``*_env`` setting given in ``value``, depth first."""
    items: Any = ()
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            item, path = getattr(value, name), f"{where}.{name}".lstrip(".")
            if not name.endswith("_env"):
                yield from _env_settings(item, path)
            elif field.default is None and isinstance(item, str):
                yield path, item
            elif isinstance(item, dict):  # name → variable (headers_env, query_env)
                yield from ((f"{path}.{key}", variable) for key, variable in item.items())
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    for key, item in items:
        yield from _env_settings(item, f"{where}.{key}")


#: What a kind of validation error means, in the config's words ({...}: the error's context).
PLAIN_ERRORS = {
    "missing": "is required",
    "literal_error": "must be one of {expected}",
    "model_type": "must be a mapping (name: value)",
    "model_attributes_type": "must be a mapping (name: value)",
    "dict_type": "must be a mapping (name: value)",
    "list_type": "must be a list",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "must have at least {min_length} characters",
    "string_too_long": "must have at most {max_length} characters",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
}
#: Kinds whose message is better with the value that was given.
SHOW_INPUT = frozenset(PLAIN_ERRORS) - {"missing", "too_short", "too_long"}


def describe(error: ValidationError) -> str:
    """A validation error as a person reads it: each problem as ``dotted.field.path: what is
    wrong``, with no validator internals."""
    return "; ".join(_problem(item) for item in error.errors())


def _problem(item: ErrorDetails) -> str:
    loc = [str(part) for part in item["loc"] if not INTERNAL_LOC.match(str(part))]
    kind = item["type"]
    context = {name: f"{value:g}" if isinstance(value, float) else value
               for name, value in (item.get("ctx") or {}).items()}
    if kind in ("value_error", "assertion_error"):
        text = str(context.get("error", item["msg"]))
    elif kind == "extra_forbidden":
        text = "is not a setting" + _suggestion(loc)
    elif kind in PLAIN_ERRORS and _has_context(PLAIN_ERRORS[kind], context):
        text = PLAIN_ERRORS[kind].format(**context)
        if kind in SHOW_INPUT:
            text += f" (got {_shown(item['input'])})"
    else:
        text = item["msg"].replace("Input should be", "must be")
    return f"{'.'.join(loc)}: {text}" if loc else text


#: Parts of an error's location that name a validator, not a field (``function-after[...]``).
INTERNAL_LOC = re.compile(r"^[\w-]*\[.*\]$")


def _has_context(template: str, context: dict[str, Any]) -> bool:
    """Whether ``context`` holds every ``{name}`` of ``template``."""
    return all(name in context for name in re.findall(r"\{(\w+)\}", template))


def _shown(value: object) -> str:
    """A given value as YAML spells it, cut short."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggestion(loc: list[str]) -> str:
    """For an unknown setting at ``loc``: the likeliest one meant, else those known there."""
    known = _fields_at(loc[:-1])
    if not known:
        return ""
    close = difflib.get_close_matches(loc[-1], known, n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known here: {', '.join(known)})"


def _fields_at(loc: list[str]) -> list[str]:
    """The settings of the section at ``loc`` in a Config (none when it is not a section)."""
    kind: Any = Config
    for part in loc:
        kind = _unwrap(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(part)
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) in (dict, list):
            kind = get_args(kind)[-1]
        else:
            return []
    kind = _unwrap(kind)
    return list(kind.model_fields) if isinstance(kind, type) and issubclass(kind, BaseModel) \
        else []


def _unwrap(kind: Any) -> Any:
    """``kind`` without ``Annotated`` and ``| None``."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
            continue
        options = [arg for arg in get_args(kind) if arg is not type(None)]
        if get_origin(kind) in (Union, UnionType) and len(options) == 1:
            kind = options[0]
            continue
        return kind


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate already-loaded YAML/JSON data as a Config, or raise ConfigError naming the field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe(error)}") from None


def load_config(path: str | Path | None) -> Config:
    """Read the YAML file at ``path``; with no path, the embedded default."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return parse_config(data, str(path))
