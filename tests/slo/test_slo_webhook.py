"""Webhook delivery against a real aiohttp receiver on loopback: in order, retries bounded."""

from __future__ import annotations

from aiohttp import web

from switchgear.slo.alerts import WebhookNotifier, alert_message

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


async def test_an_unreachable_webhook_is_given_up_on() -> None:
    notifier = WebhookNotifier(attempts=2, pause=0.01, timeout=1)
    notifier.start()
    notifier.send(f"http://127.0.0.1:{free_port()}/hook", "s/page",
                  alert_message(LABELS, {}, True, 1.0, None))
    await notifier.stop()
    assert (notifier.delivered, notifier.failed) == (0, 1)
