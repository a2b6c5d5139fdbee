"""What a request cost: its tokens at the deployment's prices per million, plus its share of a
self-hosted instance's time."""

from __future__ import annotations

from switchgear.config import Config, Price
from switchgear.exchange import Charges, Exchange

MILLION = 1_000_000
HOUR = 3600.0


def charges(price: Price, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
            busy_s: float = 0.0) -> Charges:
    """What these tokens and ``busy_s`` seconds on one instance slot cost at ``price``."""
    cached = min(max(cached_tokens, 0), prompt_tokens)
    return Charges(
        input=(prompt_tokens - cached) * price.input_per_million / MILLION,
        cached=cached * price.cached_price / MILLION,
        output=completion_tokens * price.output_per_million / MILLION,
        instance=busy_s * price.instance_per_hour / HOUR / price.concurrency,
        busy_s=busy_s if price.self_hosted else 0.0,
    )


def basis(price: Price) -> str:
    """The price in words, as the record's ``cost_basis`` gives it."""
    parts = [f"{price.input_per_million:g}/{price.cached_price:g}/{price.output_per_million:g} "
             "per million tokens in/cached/out"]
    if price.self_hosted:
        parts.append(f"{price.instance_per_hour:g} per instance-hour / {price.concurrency} "
                     "concurrent")
    return ", ".join(parts)


class PriceBook:
    """Prices per (alias, deployment), from the config."""

    def __init__(self, prices: dict[tuple[str, str], Price]) -> None:
        self.prices = prices
        self._bases = {where: basis(price) for where, price in prices.items()}

    @classmethod
    def of(cls, config: Config) -> PriceBook:
        """The price book of every deployment in ``config``."""
        return cls({(alias, deployment.name): deployment.price
                    for alias, model in config.models.items()
                    for deployment in model.deployments})

    def charge(self, exchange: Exchange, prompt_tokens: int, completion_tokens: int,
               cached_tokens: int) -> Charges | None:
        """What the deployment that served ``exchange`` charges for these tokens and the time
        its last attempt took; None when nothing served it or that has no price."""
        if exchange.deployment is None:
            return None
        where = (exchange.served_alias or exchange.model, exchange.deployment)
        price = self.prices.get(where)
        if price is None:
            return None
        busy = exchange.attempts[-1].latency if exchange.attempts and price.self_hosted else 0.0
        return charges(price, prompt_tokens, completion_tokens, cached_tokens, busy)

    def price(self, exchange: Exchange) -> None:
        """A Recorder step: set ``exchange.charges``, ``cost`` and ``cost_basis``. A request
        nothing served (failed, shed, answered from the cache) costs nothing."""
        usage = exchange.usage
        charged = self.charge(exchange, usage.prompt_tokens, usage.completion_tokens,
                              usage.cached_tokens)
        if charged is None:
            return
        exchange.charges = charged
        exchange.cost = charged.total
        exchange.cost_basis = self._bases[(exchange.served_alias or exchange.model,
                                           exchange.deployment or "")]
