"""The built-in price table (sections/prices.yaml): a deployment of a known hosted model with no
``price`` is charged the table's prices; an explicit price always wins; an unknown model, or a
model served locally, costs nothing as before; prompt-cache writes are charged at their price."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from switchgear.config import Config, DeploymentConfig, Price, parse_config
from switchgear.exchange import Attempt, Exchange, Operation, Usage
from switchgear.ledger.cost import PriceBook, basis, charges
from switchgear.sections import prices

MILLION = 1_000_000


def deployment(**fields: Any) -> DeploymentConfig:
    return DeploymentConfig.model_validate({"name": "d", "backend": "openai_http",
                                            "url": "http://127.0.0.1:1/v1", **fields})


def test_a_known_model_is_charged_the_tables_prices() -> None:
    mini = deployment(model="gpt-4o-mini").charged_price
    assert (mini.input_per_million, mini.cached_price, mini.output_per_million) \
        == (0.15, 0.075, 0.60)
    sonnet = deployment(model="claude-sonnet-4-5-20250929").charged_price  # a dated snapshot
    assert (sonnet.input_per_million, sonnet.cached_price, sonnet.cache_write_price,
            sonnet.output_per_million) == (3.0, 0.30, 3.75, 15.0)
    gemini = deployment(model="models/gemini-2.5-flash").charged_price
    assert gemini.input_per_million == 0.30 and gemini.output_per_million == 2.50


def test_an_explicit_price_always_wins() -> None:
    own = deployment(model="gpt-4o", price={"input_per_million": 1.0}).charged_price
    assert (own.input_per_million, own.output_per_million) == (1.0, 0.0)
    free = deployment(model="gpt-4o", price={}).charged_price  # given, even if all zero
    assert free == Price()


@pytest.mark.parametrize("fields", [
    {"model": "my-finetune"}, {},  # unknown, or no upstream model named
    {"backend": "simulated", "url": None, "model": "gpt-4o"},  # served here, not hosted
])
def test_an_unknown_or_local_model_costs_nothing(fields: dict[str, Any]) -> None:
    assert deployment(**fields).charged_price == Price()


def exchange(usage: Usage) -> Exchange:
    served = Exchange(request_id="r", operation=Operation.CHAT, body={}, model="chat")
    served.deployment = "d"
    served.attempts.append(Attempt(deployment="d", started=0.0, latency=0.5))
    served.usage = usage
    return served


def test_the_price_book_charges_table_prices_and_cache_reads_and_writes() -> None:
    config: Config = parse_config({"models": {"chat": {"deployments": [{
        "name": "d", "backend": "openai_http", "url": "http://127.0.0.1:1/v1",
        "model": "claude-sonnet-4-5"}]}}})
    book = PriceBook.of(config)
    served = exchange(Usage(prompt_tokens=1_000, completion_tokens=100, cached_tokens=600,
                            cache_write_tokens=300))
    book.price(served)
    assert served.charges is not None
    # 100 fresh input tokens at 3.0, 300 written at 3.75, 600 read at 0.30, 100 out at 15.0
    assert served.charges.input == pytest.approx((100 * 3.0 + 300 * 3.75) / MILLION)
    assert served.charges.cached == pytest.approx(600 * 0.30 / MILLION)
    assert served.charges.output == pytest.approx(100 * 15.0 / MILLION)
    assert served.cost == pytest.approx(served.charges.total)
    assert served.cost_basis == "3/0.3/15 per million tokens in/cached/out, " \
                                "3.75 per million cache-write tokens"


def test_a_cache_write_defaults_to_a_quarter_more_than_input() -> None:
    price = Price(input_per_million=2.0)
    assert price.cache_write_price == 2.5
    parts = charges(price, 1_000, 0, cached_tokens=0, cache_write_tokens=1_000)
    assert parts.input == pytest.approx(1_000 * 2.5 / MILLION)
    assert basis(price) == "2/2/0 per million tokens in/cached/out"
    # counts an upstream got wrong never charge more tokens than the prompt had
    assert charges(price, 100, 0, cached_tokens=80, cache_write_tokens=80).input \
        == pytest.approx(20 * 2.5 / MILLION)


def test_the_table_is_dated_complete_and_shipped_with_the_package() -> None:
    data = yaml.safe_load(Path(prices.__file__).with_name("prices.yaml").read_text())
    assert data["version"] == prices.TABLE_VERSION
    assert {"gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"} <= set(data["models"])
    for name, entry in data["models"].items():
        assert entry["input"] > 0, name
        assert set(entry) <= set(prices.FIELDS), name
        Price(**prices.PRICES[name])  # every entry makes a valid Price
    pyproject = (Path(prices.__file__).parents[3] / "pyproject.toml").read_text()
    assert '"switchgear.sections" = ["prices.yaml"]' in pyproject
