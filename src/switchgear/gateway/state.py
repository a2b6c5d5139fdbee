"""The gateway's state: everything shared between requests, built once and passed explicitly."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from switchgear.admission.budgets import InProcessBudgets, RedisBudgets
from switchgear.admission.keys import KeyRing, bootstrap_key
from switchgear.admission.limits import InProcessLimiter, RedisLimiter
from switchgear.admission.tiers import FleetTierGate, TierGate
from switchgear.backends import build_backend
from switchgear.background import Calls, Parts, Together
from switchgear.batch.batches import Batches
from switchgear.batch.files import BatchFiles
from switchgear.batch.runner import BatchRunner
from switchgear.config import (
    RESTART_SECTIONS,
    Config,
    ConfigError,
    DeploymentConfig,
    LimitsConfig,
    OutlierConfig,
    is_loopback,
    unset_environment,
)
from switchgear.engine.metrics import EngineCollector, engine_stats
from switchgear.gateway.requests import RequestIds, make_exchange
from switchgear.governance.audit import AuditTrail
from switchgear.governance.canary import CanaryRollbacks
from switchgear.governance.changes import ConfigChanges
from switchgear.governance.follow import ConfigFollower, unusable
from switchgear.governance.secret import AuditKey
from switchgear.governance.versions import (
    ConfigVersion,
    ConfigVersions,
    config_text,
    serving_config,
)
from switchgear.ledger.cost import PriceBook
from switchgear.pipeline import Handler, chain
from switchgear.pipeline.admit import Admit, Authenticator, Quotas
from switchgear.pipeline.cache import Cache
from switchgear.pipeline.guard import Guard
from switchgear.pipeline.prioritize import Prioritize
from switchgear.pipeline.prompt import Prompt
from switchgear.pipeline.record import Record, Recorder, log_row, store_content
from switchgear.pipeline.resolve import Resolve
from switchgear.pipeline.route import Route
from switchgear.quality.detector import ChangeDetector
from switchgear.quality.refusal import judge_refusal
from switchgear.quality.signals import QualitySignals
from switchgear.routing.budget import RetryBudget
from switchgear.routing.checks import HealthChecker
from switchgear.routing.deployment import Deployment, FleetDeployment
from switchgear.routing.router import Router
from switchgear.sections.tiers import TierConfig
from switchgear.slo.monitor import SLOMonitor
from switchgear.store import open_store
from switchgear.store.base import RecordStore, redact_url
from switchgear.store.leases import FleetLeases, FleetSemaphore
from switchgear.store.maintenance import StoreMaintenance
from switchgear.store.redis import connect_redis
from switchgear.store.writer import RecordWriter
from switchgear.telemetry.metrics import GatewayMetrics
from switchgear.telemetry.tracing import Tracer

log = logging.getLogger("switchgear.gateway")


def build_quotas(config: LimitsConfig) -> Quotas:
    """Rate limits and budgets: in this process, or in Redis when ``state_url`` is set."""
    if config.state_url is None:
        return Quotas(InProcessLimiter(), InProcessBudgets(), config)
    client = connect_redis(config.state_url)
    prefix = config.state_prefix
    return Quotas(RedisLimiter(client, prefix=prefix + "limit:"),
                  RedisBudgets(client, prefix=prefix + "budget:"), config, on_close=client.aclose)

#: How long shutdown keeps trying to write pending records to an unreachable store.
DRAIN_SECONDS = 60
#: How many applied versions, newest first, start-up tries when the newest cannot serve.
MAX_FALLBACK_VERSIONS = 100


@dataclass(slots=True, eq=False)
class Serving:
    """What one config version decides: routes and deployments, prices, limits, priority, cache,
    guards, SLOs and quality signals, assembled into a pipeline. Built whole, then swapped in at once; the
    requests it admitted (``active``) finish on it."""

    version: int
    config: Config
    router: Router
    pipeline: Handler
    recorder: Recorder
    quotas: Quotas
    gate: TierGate | None
    cache: Cache
    checker: HealthChecker | None
    slo: SLOMonitor
    #: Quality signals and their change detector (None: ``quality.enabled`` is off).
    quality: ChangeDetector | None
    #: The version number of each prompt template this config serves.
    prompt_versions: dict[str, int] = field(default_factory=dict)
    active: int = 0
    _idle: asyncio.Event | None = None

    def enter(self) -> None:
        """A request starts on these parts."""
        self.active += 1

    def leave(self) -> None:
        """A request on these parts ended."""
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self) -> None:
        """Return once no request is running on these parts."""
        while self.active:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def parts(self, shared: Serving | None = None) -> Parts:
        """This version's parts in the order they start (they stop in reverse), less those it
        shares with ``shared``: what its requests use, then its background work. Any of them
        may be stopped unstarted (a version built and dropped) or stopped again."""
        return Parts(self.served(shared), self.background(shared))

    def served(self, shared: Serving | None = None) -> Parts:
        """What its requests use: its records (those still waiting are written when it stops),
        its backends, all at once, and its cache store."""
        kept = set(shared.router.deployments()) if shared else set()
        return Parts(
            Calls("records", on_stop=self.recorder.flush),
            Together(*(Calls(f"deployment {d.name}", d.backend.start, d.backend.aclose)
                       for d in self.router.deployments() if d not in kept)),
            None if shared and self.cache.store is shared.cache.store
            else Calls("response cache", on_stop=self.cache.aclose),
        )

    def background(self, shared: Serving | None = None) -> Parts:
        """What runs beside its requests: health checks, the SLO monitor, quality detector."""
        checker, quality = self.checker, self.quality
        return Parts(
            None if checker is None else Calls("health checks", checker.start, checker.stop),
            None if shared and self.slo is shared.slo
            else Calls("SLO monitor", self.slo.start, self.slo.stop),
            None if quality is None or (shared and quality is shared.quality)
            else Calls("quality detector", quality.start, quality.stop),
        )


@dataclass(slots=True)
class AppState:
    """The parts shared by every config version (store, writer, metrics, traces, keys, the
    limiter's counters, the audit trail) and the ``serving`` parts of the version that serves now."""

    local: Config
    store: RecordStore
    writer: RecordWriter
    metrics: GatewayMetrics
    tracer: Tracer
    budget: RetryBudget
    keys: KeyRing
    authenticator: Authenticator
    counters: Quotas
    versions: ConfigVersions
    audit: AuditTrail
    #: The change-request workflow (governance/changes.py), which asks ``adoptable``.
    changes: ConfigChanges = field(init=False)
    #: Canary rollbacks made config versions, so that every replica rolls back.
    canaries: CanaryRollbacks = field(init=False)
    serving: Serving = field(init=False)
    follower: ConfigFollower = field(init=False)
    #: This replica's places in the fleet-wide limits (None: no ``limits.state_url``).
    leases: FleetLeases | None = field(init=False, default=None)
    #: Runs the Batch API's lines in spare capacity (batch/runner.py).
    batch_runner: BatchRunner = field(init=False)
    #: The newest applied version at start-up (it serves unless it cannot here).
    _newest: int = 0
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    #: What ``start`` started, for ``stop`` (None until it has).
    _running: Parts | None = None

    @classmethod
    def build(cls, config: Config) -> AppState:
        """Assemble the state for ``config``; nothing is connected or loaded until ``start``.
        ConfigError when ``config`` cannot serve, naming every problem with the environment
        at once."""
        audit_key = _audit_key(config)
        store = open_store(config.store.url)
        writer = RecordWriter(store, batch_size=config.store.batch_size,
                              flush_interval=config.store.flush_interval_ms / 1000,
                              queue_size=config.store.queue_size)
        admin_token = os.environ.get(config.auth.admin_key_env)
        keys = KeyRing(store, bootstrap_key(admin_token) if admin_token else None)
        versions = ConfigVersions(store)
        state = cls(config, store, writer, GatewayMetrics(config.telemetry.max_label_values),
                    Tracer(config.telemetry), RetryBudget(config.routing.retry), keys,
                    Authenticator(keys), build_quotas(config.limits), versions,
                    AuditTrail(store, audit_key))
        state.changes = ConfigChanges(versions, state.adoptable)
        limits = config.limits
        if limits.state_url is not None:
            state.leases = FleetLeases.connect(limits.state_url, limits.state_prefix,
                                               limits.fleet_lease_s)
            state.metrics.watch_fleet(state.leases.places)
        state.canaries = CanaryRollbacks(versions, state.audit, config)
        state.metrics.watch_writer(writer)
        state.metrics.watch_routing(lambda: state.router.snapshot())
        state.metrics.watch_tiers(lambda: None if state.gate is None else state.gate.snapshot())
        state.serving = state.build_serving(config, 0, None, {}, "the config file")
        state.metrics.registry.register(
            EngineCollector(lambda: engine_stats(state.router.deployments())))
        state.follower = ConfigFollower(state.versions, state.adopt,
                                        lambda: state.config.governance.poll_interval_s)
        state.batch_runner = BatchRunner(
            store, lambda: state.serving, Batches(store, BatchFiles(store)), keys, state.tracer,
            make_exchange, RequestIds().new, state.metrics.batch)
        return state

    def build_serving(self, config: Config, version: int, previous: Serving | None,
                      prompt_versions: dict[str, int], source: str) -> Serving:
        """The serving parts for ``config`` (with its templates' ``prompt_versions``), reusing
        the deployments, cache store, priority gate and SLO monitor of ``previous`` that
        ``config`` leaves as they were; built, not started. Whatever stops them being built is
        a ConfigError naming ``source``: this is what makes a config adoptable."""
        unset = unset_environment(config)
        if unset:
            raise ConfigError(f"{source}: {unset}")
        try:
            return self._assemble(config, version, previous, prompt_versions)
        except ConfigError:
            raise
        except Exception as error:  # any part that cannot be built makes the config unusable
            raise ConfigError(f"{source}: cannot be built: {error}") from error

    async def adoptable(self, text: str) -> None:
        """Build what the config version ``text`` would serve here, without starting it, then
        drop it: ConfigError when it cannot serve."""
        config = serving_config(text, self.local, "the config")
        built = self.build_serving(config, 0, self.serving, {}, "the config")
        await _close_unshared(built, self.serving)

    def _assemble(self, config: Config, version: int, previous: Serving | None,
                  prompt_versions: dict[str, int]) -> Serving:
        """``build_serving``'s work."""
        routing = config.routing
        kept = list(previous.router.deployments()) if previous else []
        deployments = {alias: [_reuse(kept, alias, d, routing.outlier)
                               or self._deployment(alias, d, routing.outlier)
                               for d in model.deployments]
                       for alias, model in config.models.items()}
        router = Router(config.models, deployments, on_roll_back=self.canaries.publish,
                        rolled_back=previous.router.rollbacks() if previous else None)
        prices = PriceBook.of(config)
        route = Route(router, routing.retry, self.budget, routing.queue_timeout_ms / 1000,
                      self.tracer)
        quotas = Quotas(self.counters.limiter, self.counters.budgets, config.limits,
                        keys=self.keys)
        log_content = config.store.log_content
        before = previous.config if previous else None
        # The quality signals and detector carry on while the quality section stays as it was.
        quality = (None if not config.quality.enabled
                   else previous.quality if previous and before and previous.quality
                   and before.quality == config.quality
                   else ChangeDetector(QualitySignals(config.quality), config.quality,
                                       lambda: self.router, self.metrics))
        # What happens when a request ends, however it ends, in order (pipeline/record.py).
        recorder = Recorder([
            prices.price,                                      # its cost, read by the rest
            self.metrics.observer(router.aliases),             # counters and histograms
            router.observe,                                    # the canary guard
            quotas.settle,                                     # real tokens and cost to quotas
            judge_refusal,                                     # was the answer a refusal
            quality.signals.observe if quality else None,      # quality signals
            store_content if log_content else None,            # redacted prompt and answer
            self.tracer.export if self.tracer.exporting else None,  # its spans
            log_row(self.writer),                              # its request-log row, last
        ])
        tiers = None if config.tiers is None else config.tiers.reserving(config.batch.reserve)
        gate = (previous.gate if previous and before and previous.gate
                and previous.gate.config == tiers
                else self._gate(tiers) if tiers is not None else None)
        answers = (previous.cache.store if previous and before and before.cache == config.cache
                   else None)
        cache = Cache(config.cache, prices, self.metrics.cache_evictions.inc, answers)
        guards = config.guards
        guarded = bool(guards.input or guards.output or guards.routes or guards.keys)
        # The request flow, in the order a request meets it (docs/architecture.md).
        pipeline = chain(
            Record(recorder),                         # every request ends in one record
            Resolve(router),                          # alias and variant; unknown model: 404
            Admit(self.authenticator, quotas),        # budgets and rate limits
            Prompt(config.prompts, prompt_versions),  # render a named prompt template
            Guard(guards) if guarded else None,       # input checks, then output checks
            cache,                                    # hit, coalesce, or miss and remember
            Prioritize(gate),                         # the tier's turn, or shed
            route,                                    # deployments, retries, fallbacks
        )
        interval = routing.health_check_interval_s
        checker = HealthChecker(router.deployments(), interval) if interval else None
        slo = (previous.slo if previous and before and before.slo == config.slo
               else SLOMonitor(config.slo, self.store, self.metrics.slo))
        return Serving(version, config, router, pipeline, recorder, quotas, gate, cache, checker,
                       slo, quality, prompt_versions)

    def _deployment(self, alias: str, config: DeploymentConfig, outlier: OutlierConfig
                    ) -> Deployment:
        """A new deployment, its ``max_concurrency`` held on this replica or fleet-wide."""
        backend = build_backend(config)
        if config.max_concurrency_scope == "replica":
            return Deployment(alias, config, backend, outlier)
        return FleetDeployment(alias, config, backend, outlier,
                               places=self._fleet("max_concurrency", alias, config.name))

    def _gate(self, config: TierConfig) -> TierGate:
        """The priority gate, its ``capacity`` held on this replica or fleet-wide."""
        if config.capacity_scope == "replica":
            return TierGate(config)
        return FleetTierGate(config, self._fleet("tiers_capacity"))

    def _fleet(self, *name: str) -> FleetSemaphore:
        """The fleet's semaphore called ``name``; ConfigError without a shared state."""
        if self.leases is None:
            raise ConfigError("fleet scope needs limits.state_url at start-up (the shared-state "
                              "Redis that holds the fleet's places)")
        return self.leases.semaphore(*name)

    # The serving version's parts, read through these at each use.
    @property
    def config(self) -> Config:
        """The config that serves now."""
        return self.serving.config

    @property
    def router(self) -> Router:
        """The router of the serving version."""
        return self.serving.router

    @property
    def pipeline(self) -> Handler:
        """The pipeline of the serving version."""
        return self.serving.pipeline

    @property
    def recorder(self) -> Recorder:
        """The recorder of the serving version."""
        return self.serving.recorder

    @property
    def quotas(self) -> Quotas:
        """The limits and budgets of the serving version."""
        return self.serving.quotas

    @property
    def gate(self) -> TierGate | None:
        """The priority gate of the serving version."""
        return self.serving.gate

    @property
    def cache(self) -> Cache:
        """The response cache of the serving version."""
        return self.serving.cache

    @property
    def checker(self) -> HealthChecker | None:
        """The health checker of the serving version's deployments."""
        return self.serving.checker

    @property
    def slo(self) -> SLOMonitor:
        """The SLO monitor of the serving version."""
        return self.serving.slo

    async def start(self) -> None:
        """Start the runtime's parts in the order declared here: each needs those above it.
        They stop in reverse (``stop``), so each outlives what uses it; when one fails to
        start, those that started are stopped and the error raised."""
        upkeep = StoreMaintenance(self.store, lambda: self.local.store)  # store.* needs a restart
        parts = Parts(
            Calls("store", self.store.open, self.store.close),
            Calls("store maintenance", upkeep.start, upkeep.stop),  # partitions ahead, retention
            Calls("audit key", self.audit.start),  # the loopback dev key file made if needed
            Calls("audit trail", self.audit.check_key),  # refused if another key sealed it
            Calls("canary rollbacks", on_stop=self.canaries.stop),  # written while it is open
            Calls("API keys", self.keys.load),
            Calls("config version", self._load_version),  # the one that serves; file seeds 1
            Calls("authentication", self._choose_auth),  # keys required, or open on loopback
            Calls("record writer", self.writer.start, self._close_writer),  # drains at stop
            Calls("tracer", self.tracer.start, self.tracer.stop),  # OTLP, when configured
            Calls("shared quotas", on_stop=self.counters.aclose),  # settlements; Redis client
            # renewed while requests hold them; what is still held is given back at stop
            None if self.leases is None else Calls("fleet leases", self.leases.start,
                                                   self.leases.stop),
            # whichever version serves: its backends and cache, then health checks, SLOs, quality
            Calls("serving version", lambda: self.serving.parts().start(),
                  lambda: self.serving.parts().stop()),
            Calls("retiring versions", on_stop=self._end_retirements),  # adopt starts them
            # batch lines through the serving version; at stop, those running go back pending
            Calls("batch runner", self.batch_runner.start, self.batch_runner.stop),
            Calls("config follower", lambda: self.follower.start(self._newest,
                                                                 self.serving.version),
                  self.follower.stop),
            Calls("key follower", lambda: self.keys.follow(
                lambda: self.config.governance.poll_interval_s), self.keys.stop),
        )
        await parts.start()
        self._running = parts
        log.info("switchgear ready: config version %d, models %s", self.serving.version,
                 ", ".join(self.router.aliases))

    async def _load_version(self) -> None:
        """Serve the newest applied version that can serve here (seeding version 1 from the
        file on first start; see ``_follow_file``); say loudly when that is not the newest."""
        await self.versions.seed(self.local)
        latest = await self._follow_file()
        provisional, failures = self.serving, []
        for version in await self.versions.history(MAX_FALLBACK_VERSIONS):
            source = f"config version {version.version}"
            try:
                config = serving_config(version.config, self.local, source)
                self.serving = self.build_serving(config, version.version, provisional,
                                                  version.prompt_versions, source)
                break
            except ConfigError as error:
                failures.append(error)
        else:
            raise ConfigError(f"no stored config version can serve on this replica ("
                              f"{'; '.join(map(str, failures))}): fix the store "
                              f"{redact_url(self.local.store.url)} or point store.url at a "
                              "fresh store")
        if failures:
            log.error("%s", unusable(latest.version, self.serving.version, failures[0]))
        await _close_unshared(provisional, self.serving)
        self._newest = latest.version

    async def _follow_file(self) -> ConfigVersion:
        """The newest applied version, once the config file had its say. While nobody has
        applied a change request to the store, the file decides: when it differs from the
        newest version it becomes the next one. After that the store decides, and a file that
        differs is only warned about."""
        latest = await self.versions.get()
        if latest is None:  # pragma: no cover - the seed just wrote one
            raise RuntimeError("no config version in the store")
        if latest.config == config_text(self.local):
            return latest
        store = redact_url(self.local.store.url)
        if await self.versions.governed():
            log.warning("the config file differs from config version %d, which serves: the "
                        "store %s holds applied change requests, so it decides what serves "
                        "(the file still sets %s). To serve the file, propose it: `switchgear "
                        "config propose FILE`; or point store.url at a fresh store.",
                        latest.version, store, ", ".join(RESTART_SECTIONS))
            return latest
        added = await self.versions.add_file_version(self.local, latest)
        if added is None:  # another replica stored a version meanwhile: it serves
            return await self._follow_file()
        log.info("the config file differs from config version %d and no change request has "
                 "been applied in the store %s: stored the file as config version %d, which "
                 "serves", latest.version, store, added.version)
        return added

    async def adopt(self, version: ConfigVersion) -> None:
        """Serve ``version`` from now on: build its parts, start those it does not share with
        the version serving, swap them in at once; the old parts finish their requests, then
        what only they used is closed (``_retire``)."""
        source = f"config version {version.version}"
        config = serving_config(version.config, self.local, source)
        old = self.serving
        new = self.build_serving(config, version.version, old, version.prompt_versions, source)
        try:
            await new.parts(shared=old).start()
        except BaseException:  # what was built for it and never started goes too (its cache)
            await _close_unshared(new, old)
            raise
        self.serving = new
        log.info("config version %d serves now (was %d)", new.version, old.version)
        task = asyncio.get_running_loop().create_task(self._retire(old, new),
                                                      name=f"retire-config-{old.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Serving, new: Serving) -> None:
        """Stop the background work only ``old`` had now; close what only its requests used
        once they have finished (or after DRAIN_SECONDS)."""
        try:
            await old.background(shared=new).stop()
            async with asyncio.timeout(DRAIN_SECONDS):
                await old.drained()
        except TimeoutError:
            log.warning("config version %d: %d requests still running after %ss; closing its "
                        "parts", old.version, old.active, DRAIN_SECONDS)
        finally:  # at shutdown too, when this is cancelled
            await old.served(shared=new).stop()

    async def _end_retirements(self) -> None:
        """Cancel the retirements still waiting for requests: each closes its parts at once."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def _choose_auth(self) -> None:
        """Keys required, or open on loopback only: decided once at start-up, and said."""
        mode, host = self.config.auth.mode, self.config.server.host
        required = mode == "required" or (mode == "auto" and (
            self.keys.bootstrap is not None or not self.keys.empty or not is_loopback(host)))
        if required:
            self.authenticator.keys = self.keys
            log.info("API keys required (%d keys%s)", len(self.keys.all()),
                     ", bootstrap admin key set" if self.keys.bootstrap else "")
        else:
            self.authenticator.keys = None
            log.warning("authentication is OFF: open to anyone who can reach %s (loopback only); "
                        "set %s or create a key to require keys", host,
                        self.config.auth.admin_key_env)

    async def stop(self) -> None:
        """Stop what ``start`` started, in reverse: the followers first, then the serving
        version's parts; the tracer sends its spans before the record writer writes what is
        pending (for DRAIN_SECONDS at most); the store closes last."""
        parts, self._running = self._running, None
        if parts is not None:
            await parts.stop()
        log.info("switchgear stopped: %d records written", self.writer.written)

    async def _close_writer(self) -> None:
        """Write every record still pending (for DRAIN_SECONDS at most), then stop the writer."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                await self.writer.close()
        except TimeoutError:
            log.error("the store stayed unwritable for %ss at shutdown: %d records not written",
                      DRAIN_SECONDS, self.writer.pending)


def _audit_key(config: Config) -> AuditKey:
    """The audit trail's key source; ConfigError naming, with it, every other environment
    variable ``config`` needs and lacks, so that one start shows them all."""
    try:
        return AuditKey.of(config, serving=True)
    except ConfigError as error:
        unset = unset_environment(config)
        raise ConfigError(f"{error}; {unset}" if unset else str(error)) from None


def _reuse(kept: list[Deployment], alias: str, config: DeploymentConfig,
           outlier: OutlierConfig) -> Deployment | None:
    """The deployment in ``kept`` with exactly this alias and config, taken out of ``kept``."""
    for deployment in kept:
        if (deployment.alias, deployment.config, deployment.outlier) == (alias, config, outlier):
            kept.remove(deployment)
            return deployment
    return None


async def _close_unshared(old: Serving, new: Serving) -> None:
    """Stop the parts ``old`` has that ``new`` does not use (started or only built)."""
    await old.parts(shared=new).stop()
