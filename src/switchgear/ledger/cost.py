"""What a request cost: tokens times the deployment's price per million."""

from __future__ import annotations

from switchgear.config import Price
from switchgear.exchange import Exchange


class PriceBook:
    """Prices per (alias, deployment), from the config."""

    def __init__(self, prices: dict[tuple[str, str], Price]) -> None:
        self._prices = prices

    def price(self, exchange: Exchange) -> None:
        """Set ``exchange.cost`` and ``cost_basis`` from its usage and the deployment that served it."""
        if exchange.deployment is None:
            return
        price = self._prices.get((exchange.model, exchange.deployment))
        if price is None:
            return
        usage = exchange.usage
        exchange.cost = (usage.prompt_tokens * price.input_per_million
                         + usage.completion_tokens * price.output_per_million) / 1_000_000
        exchange.cost_basis = (f"{price.input_per_million:g}/{price.output_per_million:g} "
                               "per million tokens in/out")
