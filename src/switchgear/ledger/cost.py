"""What a request cost: tokens times the deployment's price per million."""

from __future__ import annotations

from switchgear.config import Price
from switchgear.exchange import Exchange


class PriceBook:
    """Prices per (alias, deployment), from the config."""

    def __init__(self, prices: dict[tuple[str, str], Price]) -> None:
        self._prices = prices

    def cost(self, alias: str, deployment: str, prompt_tokens: int, completion_tokens: int
             ) -> float:
        """What these tokens cost on this deployment (0 when it has no price)."""
        price = self._prices.get((alias, deployment))
        if price is None:
            return 0.0
        return (prompt_tokens * price.input_per_million
                + completion_tokens * price.output_per_million) / 1_000_000

    def price(self, exchange: Exchange) -> None:
        """Set ``exchange.cost`` and ``cost_basis`` from its usage and the deployment that served it."""
        if exchange.deployment is None:
            return
        alias = exchange.served_alias or exchange.model
        price = self._prices.get((alias, exchange.deployment))
        if price is None:
            return
        usage = exchange.usage
        exchange.cost = self.cost(alias, exchange.deployment, usage.prompt_tokens,
                                  usage.completion_tokens)
        exchange.cost_basis = (f"{price.input_per_million:g}/{price.output_per_million:g} "
                               "per million tokens in/out")
