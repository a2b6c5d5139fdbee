"""What a request cost: its tokens at the deployment's prices per million, plus its share of a
self-hosted instance's time.

Prompt tokens come in three kinds: read from the upstream's prompt cache (charged at the cached
price, the ``cached`` part), written to it (Anthropic's cache writes, charged at the cache-write
price as part of ``input``: they are input the upstream processed, at a premium) and the rest
(``input`` at the input price).

A request a batch line made (``api`` ``openai.batch``, at the batch tier) has its token charges
cut by the deployment's ``batch_discount``, as hosted providers discount batch work; its share
of a self-hosted instance's time is charged in full."""

from __future__ import annotations

from switchgear.config import Config, Price
from switchgear.exchange import Charges, Exchange

MILLION = 1_000_000
HOUR = 3600.0
#: ``Exchange.api`` of a request the batch runner made from a batch line (batch/runner.py).
BATCH_API = "openai.batch"


class Rates:
    """A price as rates per token and per busy second of one instance slot (worked out once,
    so costing a request is a few multiplications)."""

    __slots__ = ("cache_write", "cached", "input", "instance", "output", "self_hosted")

    def __init__(self, price: Price, token_share: float = 1.0) -> None:
        self.input = price.input_per_million / MILLION * token_share
        self.cached = price.cached_price / MILLION * token_share
        self.cache_write = price.cache_write_price / MILLION * token_share
        self.output = price.output_per_million / MILLION * token_share
        self.instance = price.instance_per_hour / HOUR / price.concurrency
        self.self_hosted = price.self_hosted

    def charge(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
               busy_s: float = 0.0, cache_write_tokens: int = 0) -> Charges:
        """What these tokens and ``busy_s`` seconds on one instance slot cost (of the prompt
        tokens, ``cached_tokens`` were read from the prompt cache and ``cache_write_tokens``
        written to it)."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
        if not self.self_hosted:
            busy_s = 0.0
        return Charges((prompt_tokens - cached - written) * self.input + written * self.cache_write,
                       cached * self.cached, completion_tokens * self.output,
                       busy_s * self.instance, busy_s)


def charges(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
            busy_s: float = 0.0, cache_write_tokens: int = 0) -> Charges:
    """What these tokens and ``busy_s`` seconds on one instance slot cost at ``price``."""
    return Rates(price).charge(prompt_tokens, completion_tokens, cached_tokens, busy_s,
                               cache_write_tokens)


def basis(price: Price) -> str:
    """The price in words, as the record's ``cost_basis`` gives it."""
    parts = [f"{price.input_per_million:g}/{price.cached_price:g}/{price.output_per_million:g} "
             "per million tokens in/cached/out"]
    if price.cache_write_per_million is not None:
        parts.append(f"{price.cache_write_per_million:g} per million cache-write tokens")
    if price.self_hosted:
        parts.append(f"{price.instance_per_hour:g} per instance-hour / {price.concurrency} "
                     "concurrent")
    return ", ".join(parts)


def batch_basis(price: Price) -> str:
    """``basis`` of a batch line's request: with the batch discount, when there is one."""
    if not price.batch_discount:
        return basis(price)
    return f"{basis(price)}, tokens {price.batch_discount:.0%} off (batch)"


class PriceBook:
    """Prices per (alias, deployment), from the config (each deployment's ``charged_price``:
    its own, or the built-in table's for a known hosted model)."""

    def __init__(self, prices: dict[tuple[str, str], Price]) -> None:
        self.prices = prices
        self._rates = {where: (Rates(price), basis(price)) for where, price in prices.items()}
        self._batch_rates = {where: (Rates(price, 1 - price.batch_discount), batch_basis(price))
                             for where, price in prices.items()}

    @classmethod
    def of(cls, config: Config) -> PriceBook:
        """The price book of every deployment in ``config``."""
        return cls({(alias, deployment.name): deployment.charged_price
                    for alias, model in config.models.items()
                    for deployment in model.deployments})

    def charge(self, exchange: Exchange, prompt_tokens: int, completion_tokens: int,
               cached_tokens: int, cache_write_tokens: int = 0) -> Charges | None:
        """What the deployment that served ``exchange`` charges for these tokens and the time
        its last attempt took; None when nothing served it or that has no price."""
        found = self._find(exchange)
        if found is None:
            return None
        rates = found[0]
        busy = exchange.attempts[-1].latency if rates.self_hosted and exchange.attempts else 0.0
        return rates.charge(prompt_tokens, completion_tokens, cached_tokens, busy,
                            cache_write_tokens)

    def price(self, exchange: Exchange) -> None:
        """A Recorder step: set ``exchange.charges``, ``cost`` and ``cost_basis``, once (a
        request priced already, by the Cache stage as it kept the answer, keeps them). A request
        nothing served (failed, shed, answered from the cache) costs nothing."""
        if exchange.charges is not None:
            return
        found = self._find(exchange)
        if found is None:
            return
        rates, exchange.cost_basis = found
        usage = exchange.usage
        busy = exchange.attempts[-1].latency if rates.self_hosted and exchange.attempts else 0.0
        charged = rates.charge(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                               busy, usage.cache_write_tokens)
        exchange.charges = charged
        exchange.cost = charged.input + charged.cached + charged.output + charged.instance

    def _find(self, exchange: Exchange) -> tuple[Rates, str] | None:
        if exchange.deployment is None:
            return None
        rates = self._batch_rates if exchange.api == BATCH_API else self._rates
        return rates.get((exchange.served_alias or exchange.model, exchange.deployment))
