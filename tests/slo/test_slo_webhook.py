"""Webhook delivery against a real aiohttp receiver on loopback: in order, retries bounded, each
alert change sent once by replicas sharing a store."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from slo_support import record

from switchgear.sections.slo import SLOSection
from switchgear.slo.alerts import WebhookNotifier, alert_message
from switchgear.slo.monitor import SLOMonitor
from switchgear.store import open_store

from servers import free_port

LABELS = {"alertname": "SLOErrorBudgetBurn", "slo": "s", "severity": "page", "owner": "o"}


async def receiver(statuses: list[int], bodies: list[dict[str, object]]) -> tuple[web.AppRunner,
                                                                                  str]:
    """A receiver answering each POST with the next of ``statuses`` (then 200)."""

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/hook"


async def test_failures_are_retried_a_bounded_number_of_times_in_order() -> None:
    bodies: list[dict[str, object]] = []
    runner, url = await receiver([503, 200, 500, 500, 500, 500], bodies)
    notifier = WebhookNotifier(attempts=3, pause=0.01)
    notifier.start()
    try:
        notifier.send(url, "s/page", alert_message(LABELS, {}, True, 1.0, None))
        notifier.send(url, "s/page", alert_message(LABELS, {}, False, 1.0, 2.0))
        notifier.send(url, "s/page", alert_message(LABELS, {}, True, 3.0, None))
        await notifier.stop()
    finally:
        await runner.cleanup()
    # firing: 503 then delivered; resolved: 500 x3 then dropped; firing again: 500 then delivered.
    assert [b["status"] for b in bodies] == ["firing", "firing", "resolved", "resolved",
                                             "resolved", "firing", "firing"]
    assert (notifier.delivered, notifier.failed) == (2, 1)


async def test_an_unreachable_webhook_is_given_up_on(refused_url: Callable[..., str]) -> None:
    notifier = WebhookNotifier(attempts=2, pause=0.01, timeout=1)
    notifier.start()
    notifier.send(refused_url() + "/hook", "s/page",
                  alert_message(LABELS, {}, True, 1.0, None))
    await notifier.stop()
    assert (notifier.delivered, notifier.failed) == (0, 1)


async def test_replicas_sharing_a_store_notify_each_change_once(store_url: str) -> None:
    """Two monitors (two replicas, or one before and after a restart) over one request log."""
    bodies: list[dict[str, object]] = []
    runner, url = await receiver([], bodies)
    store = open_store(store_url)
    await store.open()
    section = SLOSection.model_validate({"objectives": [{
        "name": "s", "owner": "o", "sli": {"kind": "availability"}, "target": 0.99,
        "alerting": {"webhook_url": url,
                     "policy": [{"long": "1h", "short": "5m", "burn_rate": 10,
                                 "severity": "page"}]}}]})
    now = time.time()
    await store.write([record(i, now - i, 500 if i % 2 else 200) for i in range(600)])
    replicas = [SLOMonitor(section, store), SLOMonitor(section, store)]
    try:
        for monitor in replicas:
            monitor.notifier.start()
            await monitor.evaluate()
            assert monitor.alerts[("s", "page")].firing
        restarted = SLOMonitor(section, store)
        restarted.notifier.start()
        replicas.append(restarted)
        await restarted.evaluate()
        assert restarted.alerts[("s", "page")].firing
        await store.execute("DELETE FROM request_log")  # the failures leave the 5m window
        for monitor in replicas:
            await monitor.evaluate()
            assert not monitor.alerts[("s", "page")].firing
    finally:
        for monitor in replicas:
            await monitor.notifier.stop()
        await store.close()
        await runner.cleanup()
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
