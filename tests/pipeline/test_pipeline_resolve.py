"""Resolve: the alias (and experiment variant) is set before the next stage sees the request; an
unknown model is a 404 that goes no further."""

from __future__ import annotations

import pytest
from pipeline_support import NextStage, answer, chained, config, make_exchange

from switchgear.errors import ModelNotFound
from switchgear.pipeline.resolve import Resolve
from switchgear.routing.router import Router

SIMULATED = {"deployments": [{"name": "d", "backend": "simulated"}]}


def resolve(after: NextStage) -> Resolve:
    """Resolve over a router of ``chat``, and ``exp`` split 50/50 between ``base`` and
    ``canary`` (sticky per user), chained to ``after``."""
    models = config({"chat": SIMULATED, "base": SIMULATED, "canary": SIMULATED,
                     "exp": {"variants": [{"model": "base", "weight": 50},
                                          {"model": "canary", "weight": 50}]}}).models
    return chained(Resolve(Router(models, {}, seed=1)), after)


async def test_a_plain_alias_resolves_to_itself_before_the_next_stage() -> None:
    after = NextStage(answer("resolved"))
    exchange = make_exchange("chat")
    assert await resolve(after)(exchange) == answer("resolved")
    assert after.exchanges == [exchange]
    assert after.seen[0].resolved_alias == "chat" and after.seen[0].variant is None


async def test_an_experiment_resolves_each_user_to_one_variant_and_sticks() -> None:
    after = NextStage()
    stage = resolve(after)
    chosen = {}
    for user in (f"user-{n}" for n in range(40)):
        exchange = make_exchange("exp", body={"messages": [], "user": user})
        await stage(exchange)
        arrived = after.seen[-1]
        assert arrived.resolved_alias == arrived.variant  # known when the next stage runs
        chosen[user] = arrived.variant
        again = make_exchange("exp", body={"messages": [], "user": user})
        await stage(again)
        assert again.resolved_alias == chosen[user]  # sticky
    assert set(chosen.values()) == {"base", "canary"}
    assert all(seen.model == "exp" for seen in after.seen)  # the model asked for is kept


async def test_an_unknown_model_is_a_404_that_goes_no_further() -> None:
    after = NextStage()
    exchange = make_exchange("nope")
    with pytest.raises(ModelNotFound) as refused:
        await resolve(after)(exchange)
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
    assert refused.value.param == "model"
    assert after.calls == 0
    assert exchange.resolved_alias is None and exchange.variant is None
