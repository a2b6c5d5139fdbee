"""The series a finished request counts in are remembered by the raw values they are labelled
from: the labels come out as the capped labels give them, however often a value comes back."""

from __future__ import annotations

from switchgear.exchange import Attempt, Exchange, Operation, Principal
from switchgear.telemetry.metrics import GatewayMetrics


def finished(tenant: str, deployment: str | None = "d", status: int = 200) -> Exchange:
    exchange = Exchange(request_id="r", operation=Operation.CHAT, body={}, model="chat",
                        principal=Principal(tenant=tenant), status=status)
    exchange.deployment = deployment
    exchange.done = exchange.received + 0.01
    if deployment is not None:
        exchange.attempts.append(Attempt(deployment, started=exchange.received, outcome="ok"))
    return exchange


def requests_by_labels(metrics: GatewayMetrics) -> dict[tuple[str, ...], float]:
    return {labels: cell.value for labels, cell in metrics.requests.cells.items()}


def test_a_tenant_past_the_cap_stays_other_and_a_kept_one_keeps_its_label() -> None:
    metrics = GatewayMetrics(max_label_values=1)
    observe = metrics.observer(["chat"])
    for tenant in ("a", "b", "a", "b", "c"):
        observe(finished(tenant))
    assert requests_by_labels(metrics) == {("chat", "d", "200", "a", ""): 2.0,
                                           ("chat", "d", "200", "other", ""): 3.0}


def test_no_deployment_and_an_empty_one_count_alike_and_statuses_apart() -> None:
    metrics = GatewayMetrics()
    observe = metrics.observer(["chat"])
    observe(finished("a", None, 503))
    observe(finished("a", None, 503))
    observe(finished("a", "d", 200))
    assert requests_by_labels(metrics) == {("chat", "", "503", "a", ""): 2.0,
                                           ("chat", "d", "200", "a", ""): 1.0}
    text = metrics.render().decode()
    assert ('switchgear_requests_total{deployment="",feature="",model="chat",status="503",'
            'tenant="a"} 2.0') in text


def test_a_failed_attempt_elsewhere_is_labelled_and_counted_as_before() -> None:
    metrics = GatewayMetrics()
    exchange = finished("a")
    exchange.attempts.insert(0, Attempt("e", started=exchange.received, outcome="error",
                                        error="timeout"))
    metrics.observer(["chat"])(exchange)
    assert {labels: cell.value for labels, cell in metrics.upstream_errors.cells.items()} == {
        ("chat", "e", "timeout"): 1.0}
    assert {labels: cell.value for labels, cell in metrics.retries.cells.items()} == {
        ("chat", "d"): 1.0}


def test_cache_outcomes_queue_waits_and_verdicts_count_per_value() -> None:
    metrics = GatewayMetrics()
    observe = metrics.observer(["chat"])
    for priority, outcome, passed, shed in (("batch", "hit", True, False),
                                            (None, "miss", False, True),
                                            ("batch", "hit", True, False), ("", "miss", None, False)):
        exchange = finished("a")
        exchange.priority, exchange.cache_status, exchange.output_passed = priority, outcome, passed
        exchange.queue_wait, exchange.shed = 0.5, shed
        observe(exchange)
    assert {labels: cell.value for labels, cell in metrics.cache.cells.items()} == {
        ("chat", "hit"): 2.0, ("chat", "miss"): 2.0}
    assert {labels: sum(cell.counts) for labels, cell in metrics.queue_wait.cells.items()} == {
        ("chat", "a", "batch"): 2, ("chat", "a", "unknown"): 2}
    assert {labels: cell.value for labels, cell in metrics.shed.cells.items()} == {
        ("chat", "a", "unknown"): 1.0}
    assert {labels: cell.value for labels, cell in metrics.output_checked.cells.items()} == {
        ("chat", "d", "a", "", "pass"): 2.0, ("chat", "d", "a", "", "fail"): 1.0}
