"""RequestRecord.of: each column takes the Exchange's value it is named for."""

from __future__ import annotations

from switchgear.exchange import Attempt, Charges, Exchange, Operation, Principal, Usage
from switchgear.store.records import RequestRecord


def exchange_with_every_value_distinct() -> Exchange:
    exchange = Exchange(request_id="req-1", operation=Operation.COMPLETIONS, body={},
                        model="alias-a", stream=True, api="anthropic.messages",
                        trace_id="trace-1",
                        principal=Principal(tenant="tenant-1", key_id="key-1", user="user-1",
                                            feature="feature-1"))
    exchange.received, exchange.first_token, exchange.done = 1.5, 2.5, 3.5
    exchange.deployment, exchange.served_alias = "deployment-1", "alias-b"
    exchange.variant, exchange.priority, exchange.config_version = "variant-1", "tier-1", 7
    exchange.prompt_name, exchange.prompt_version = "template-1", 8
    exchange.usage = Usage(prompt_tokens=11, completion_tokens=12, cached_tokens=13,
                           cache_write_tokens=14)
    exchange.status, exchange.error_type, exchange.truncated = 502, "Upstream", True
    exchange.attempts = [Attempt("deployment-1", 1.0), Attempt("deployment-1", 2.0)]
    exchange.cost, exchange.saved_cost = 0.25, 0.125
    exchange.charges = Charges(input=0.01, cached=0.02, output=0.03, instance=0.04, busy_s=0.05)
    exchange.stored_prompt, exchange.stored_completion = "prompt-1", "completion-1"
    exchange.cache_status, exchange.finish_reason = "miss", "length"
    exchange.refused, exchange.schema_valid, exchange.output_passed = True, False, True
    exchange.guard_action = "flag"
    exchange.checks = [{"check": "pii"}]
    return exchange


def test_each_column_takes_the_value_it_is_named_for() -> None:
    assert RequestRecord.of(exchange_with_every_value_distinct()) == RequestRecord(
        request_id="req-1", tenant="tenant-1", model="alias-a", deployment="deployment-1",
        operation="completions", stream=True, received_at=1.5, first_token_at=2.5,
        done_at=3.5, prompt_tokens=11, completion_tokens=12, status=502,
        error_type="Upstream", truncated=True, attempts=2, cost=0.25, variant="variant-1",
        key_id="key-1", user_id="user-1", feature="feature-1", priority="tier-1",
        prompt="prompt-1", completion="completion-1", cache_status="miss", saved_cost=0.125,
        finish_reason="length", refused=True, schema_valid=False, output_passed=True,
        guard_action="flag", checks='[{"check":"pii"}]', trace_id="trace-1",
        served_alias="alias-b", cached_tokens=13, input_cost=0.01, cached_cost=0.02,
        output_cost=0.03, instance_cost=0.04, busy_s=0.05, config_version=7,
        prompt_name="template-1", prompt_version=8, api="anthropic.messages",
        cache_write_tokens=14,
    )


def test_an_unpriced_exchange_without_trace_has_no_charges_and_no_trace_id() -> None:
    exchange = exchange_with_every_value_distinct()
    exchange.charges, exchange.trace_id, exchange.checks = None, "", []
    record = RequestRecord.of(exchange)
    assert (record.input_cost, record.cached_cost, record.output_cost, record.instance_cost,
            record.busy_s) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert record.trace_id is None and record.checks is None
