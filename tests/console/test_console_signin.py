"""Signing in to the console in headless Chromium, and what a role without access sees: the
same 403 the admin API answers with, as the console's 403 page."""

from __future__ import annotations

import pytest
from console_page import PAGES, Console
from console_site import OTHER_TENANT, TENANT, Site

#: The admin path each page reads first: where the API's answer to a role decides the page's.
PAGE_SOURCES = {"overview": "/admin/overview", "slo": "/admin/slo", "cost": "/admin/cost",
                "routing": "/admin/routing", "requests": "/admin/records",
                "batches": "/admin/batches",
                "governance": "/admin/config/history", "scorecard": "/admin/scorecard"}


def test_a_bad_key_is_refused_with_the_apis_message_and_shows_no_page(
        console: Console, site: Site) -> None:
    message = console.sign_in_refused("sg-not-a-key-0123456789abcdef")
    refused = site.fetch_as("sg-not-a-key-0123456789abcdef", "/admin/whoami")
    assert refused[0] == 401 and message == refused[1]["error"]["message"]
    assert not console.browser.find("main#page").displayed
    assert console.browser.run("return sessionStorage.length") == 0
    console.screenshot("signin-refused")


@pytest.mark.parametrize(("key", "role", "tenant"), [
    ("admin", "admin", "admin"),
    ("operator", "operator", TENANT),
    ("other-operator", "operator", OTHER_TENANT),
])
def test_a_good_key_signs_in_and_the_header_says_which_role_and_tenant(
        console: Console, site: Site, key: str, role: str, tenant: str) -> None:
    whoami = console.sign_in(key)
    identity = site.admin("/admin/whoami", key)
    assert (identity["role"], identity["tenant"]) == (role, tenant)
    assert whoami.split(" · ") == [role, f"tenant {tenant}", identity["name"]]
    assert console.settled("overview") == "ready"
    if key == "admin":
        console.screenshot("signed-in")
    console.sign_out()
    assert console.browser.run("return sessionStorage.length") == 0
    console.expect_refusals(401)  # the reloaded shell asks who it is without a key
    console.browser.command("POST", "/refresh", {})
    console.browser.wait_for("form#signin")  # the key did not outlive the sign-out


@pytest.mark.parametrize("key", ["client", "approver", "viewer"])
def test_a_role_sees_the_403_page_exactly_where_the_api_refuses_it(
        console: Console, site: Site, key: str) -> None:
    console.expect_refusals(403)
    role = site.admin("/admin/whoami", key)["role"]
    console.sign_in(key)
    for page in PAGES:
        status, _ = site.fetch(PAGE_SOURCES[page], key)
        state = console.open(page)
        assert state == ("forbidden" if status == 403 else "ready"), (page, status, state)
        if state == "forbidden":
            assert console.forbidden_text().startswith(f"403: a {role} key cannot see this")
            console.screenshot(f"403-{key}-{page}")
