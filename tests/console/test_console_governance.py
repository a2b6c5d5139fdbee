"""Governance in headless Chromium: the two-person rule (the author's approval is refused with
the API's message, a second person's goes through), applying the change (a new config version),
sections a role may not read, the audit trail's verification and a new key's one-time secret."""

from __future__ import annotations

from typing import Any

import pytest
from console_page import Console
from console_site import Site, chat_models

from switchgear.governance.audit import BOOTSTRAP

from servers import wait_for_version

#: The admin path behind each section of the governance page.
SECTION_SOURCES = {"changes": "/admin/config/changes", "versions": "/admin/config/history",
                   "prompts": "/admin/prompts", "audit": "/admin/audit", "keys": "/admin/keys"}


def propose(site: Site, message: str) -> dict[str, Any]:
    """A pending change (weights moved to sim-b) proposed by the admin key over the API."""
    change: dict[str, Any] = site.admin(
        "/admin/config/changes", method="POST",
        body={"sections": {"models": chat_models(site.upstream, {"sim-a": 1.0, "sim-b": 3.0})},
              "message": message})
    assert change["status"] == "pending" and change["needs_approval"]
    return change


def press(console: Console, change_id: str, button: str) -> None:
    """Press ``button`` (approve, reject, apply) on the change's card."""
    console.browser.wait_for(f"article[data-change='{change_id}'] button.{button}").click()


def test_only_a_second_person_can_approve_and_the_change_then_applies(
        console: Console, site: Site) -> None:
    change = propose(site, "move most of chat to sim-b")
    card = f"article[data-change='{change['change_id']}']"
    console.expect_refusals(403)
    console.sign_in("admin")
    assert console.open("governance") == "ready"
    assert change["change_id"] in console.browser.wait_for(card).text
    press(console, change["change_id"], "approve")
    shown = console.browser.wait_for(f"{card} .action-result .error").text
    status, refusal = site.fetch(f"/admin/config/changes/{change['change_id']}/review",
                                 method="POST", body={"approve": True})
    assert shown == f"{status}: {refusal['error']['message']}"
    assert status == 403 and "author" in shown
    assert site.admin(f"/admin/config/changes/{change['change_id']}")["status"] == "pending"
    console.screenshot("governance-author-refused")

    console.reset()
    console.sign_in("approver")
    assert console.open("governance") == "ready"
    press(console, change["change_id"], "approve")
    console.browser.wait_for(f"{card} .badge", "approved")
    reviewed = site.admin(f"/admin/config/changes/{change['change_id']}", "approver")
    assert reviewed["status"] == "approved"
    assert console.column("status", f"tr[data-change-id='{change['change_id']}']") == ["approved"]
    assert not console.browser.find_all(f"{card} button.apply")  # an approver only reviews
    console.screenshot("governance-approved")

    console.reset()
    console.sign_in("admin")
    assert console.open("governance") == "ready"
    press(console, change["change_id"], "apply")
    console.browser.wait_for(f"tr[data-change-id='{change['change_id']}']", "applied")
    wait_for_version(site.root + "/v1", 2, site.keys["admin"])
    console.browser.find("#governance-reload").click()
    console.browser.wait_for("section[data-section=versions] tr[data-version='2']", "serving")
    history = site.admin("/admin/config/history")
    shown_versions = console.browser.find_all("section[data-section=versions] tr[data-version]")
    assert [int(str(row.attribute("data-version"))) for row in shown_versions] == [
        version["version"] for version in history["versions"]]
    assert len(shown_versions) == 2 and history["serving"] == 2
    assert console.browser.find("#config-diff").text.count("weight: 3.0") == 1
    trail = [(entry["action"], entry["actor"]) for entry in site.admin("/admin/audit")["data"]
             if entry["target"] == change["change_id"]]
    assert trail == [("config.apply", BOOTSTRAP), ("config.approve", site.key_ids["approver"]),
                     ("config.propose", BOOTSTRAP)]
    shown = [(action, actor) for action, actor, target in zip(
        console.column("action", "section[data-section=audit]"),
        console.column("actor", "section[data-section=audit]"),
        console.column("target", "section[data-section=audit]"), strict=True)
        if target == change["change_id"]]
    assert shown == trail
    console.screenshot("governance")


@pytest.mark.parametrize("key", ["viewer", "approver", "operator"])
def test_a_section_the_role_may_not_read_says_403_and_the_rest_still_show(
        console: Console, site: Site, key: str) -> None:
    console.expect_refusals(403)
    console.sign_in(key)
    assert console.open("governance") == "ready"
    for name, path in SECTION_SOURCES.items():
        status, _ = site.fetch(path, key)
        refused = console.browser.find_all(f"section[data-section={name}] [data-forbidden]")
        assert bool(refused) == (status == 403), (name, status)
        assert not console.browser.find_all(f"section[data-section={name}] .error"), name
    console.screenshot(f"governance-{key}")


def test_the_audit_trails_verification_matches_the_api(console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("governance") == "ready"
    verified = site.admin("/admin/audit/verify")
    shown = console.browser.wait_for("#audit-verification")
    assert shown.attribute("data-intact") == str(verified["intact"]).lower()
    assert verified["intact"] and "intact" in shown.text


def test_a_new_keys_secret_is_shown_once_and_works(console: Console, site: Site) -> None:
    console.sign_in("admin")
    assert console.open("governance") == "ready"
    form = console.browser.find("form#key-create")
    form.find("#key-tenant").type("acme")
    form.find("#key-name").type("made-in-the-console")
    form.find("button[type=submit]").click()
    secret = console.browser.wait_for("#new-key-secret pre").text
    status, identity = site.fetch_as(secret, "/admin/whoami")
    assert (status, identity["name"], identity["role"]) == (200, "made-in-the-console", "client")
    listed = [k for k in site.admin("/admin/keys")["data"] if k["name"] == "made-in-the-console"]
    assert len(listed) == 1 and listed[0]["role"] == "client"
    console.browser.find("#governance-reload").click()
    console.settled("governance")
    console.browser.wait(lambda: not console.browser.find_all("#new-key-secret"),
                         "the secret to be gone after a reload")


def test_a_key_revoked_in_the_console_is_refused_and_its_open_console_signs_out(
        console: Console, site: Site) -> None:
    revoked, signed_in = (site.admin("/admin/keys", method="POST", body={
        "tenant": "acme", "name": name, "role": "viewer"}) for name in ("revoked", "signed-in"))
    key_id = revoked["key"]["id"]
    console.sign_in("admin")
    assert console.open("governance") == "ready"
    revoke = f"button.revoke[data-key='{key_id}']"
    console.browser.wait_for(revoke).click()
    console.browser.wait_for(revoke, "Confirm revoke").click()  # a second click confirms
    console.browser.wait_for(f"tr[data-key-id='{key_id}'] .badge", "revoked")
    listed = next(k for k in site.admin("/admin/keys")["data"] if k["id"] == key_id)
    assert listed["revoked_at"] is not None
    assert site.fetch_as(revoked["secret"], "/admin/whoami")[0] == 401

    console.reset()
    console.sign_in_with(signed_in["secret"])
    assert console.open("routing") == "ready"
    site.admin(f"/admin/keys/{signed_in['key']['id']}", method="DELETE")
    console.expect_refusals(401)
    console.browser.find("a[data-page=slo]").click()  # the page's first call meets the 401
    shown = console.browser.wait_for("#signin-error").text
    status, refusal = site.fetch_as(signed_in["secret"], "/admin/slo")
    assert status == 401 and shown == refusal["error"]["message"]
    assert console.browser.run("return sessionStorage.length") == 0
    assert not console.browser.find("main#page").displayed
