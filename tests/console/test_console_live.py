"""The console is live: a page shows new traffic without being reloaded; Pause can be pressed."""

from __future__ import annotations

from console_page import Console
from console_site import Site, send_traffic


def test_routing_shows_new_traffic_without_a_reload_and_can_be_paused(
        console: Console, site: Site) -> None:
    console.sign_in("operator")
    assert console.open("routing") == "ready"
    before = sum(console.values("attempts"))
    sent = send_traffic(site, {"client": (1, 0)})
    console.browser.wait(lambda: sum(console.values("attempts")) == before + len(sent["client"]),
                         "the routing page to count the new request")
    assert sum(d["attempts"] for d in
               site.admin("/admin/routing", "operator")["models"]["chat"]["deployments"]
               ) == before + 1

    pause = console.browser.find("button#pause")
    pause.click()
    assert (pause.text, pause.attribute("aria-pressed")) == ("Resume", "true")
    assert console.browser.run("return location.hash") == "#/routing"
