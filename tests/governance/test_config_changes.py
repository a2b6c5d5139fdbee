"""Config changes through the real gateway: the two-person rule, roles, rejection, break-glass,
restart-only sections and rollback, seen by the official openai client and in the records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from switchgear.cli.admin_client import AdminError, admin_call
from switchgear.config import Config
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import RunningSimulator

from servers import break_glass, fetch_records, gateway, serving_version, wait_for_version

ADMIN = "sg-config-admin-0123456789abcdef01234567"
HELLO = [{"role": "user", "content": "Say hello"}]


class Admin:
    """The admin API of a running gateway, called over HTTP as one key."""

    def __init__(self, base_url: str, token: str) -> None:
        self.root, self.token = base_url.removesuffix("/v1"), token

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        return admin_call(self.root, method, path, self.token, body)

    def key(self, role: str, name: str) -> Admin:
        """A new key of ``role``, as an Admin."""
        created = self("POST", "/admin/keys", {"tenant": "ops", "name": name, "role": role})
        return Admin(self.root + "/v1", created["secret"])

    def propose(self, sections: dict[str, Any], message: str = "") -> dict[str, Any]:
        change: dict[str, Any] = self("POST", "/admin/config/changes",
                                      {"sections": sections, "message": message})
        return change

    def review(self, change_id: str, approve: bool, comment: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = self("POST", f"/admin/config/changes/{change_id}/review",
                                      {"approve": approve, "comment": comment})
        return answer

    def apply(self, change_id: str, break_glass: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = self("POST", f"/admin/config/changes/{change_id}/apply",
                                      {"break_glass": break_glass})
        return answer


def models(*sims: tuple[str, RunningSimulator, float]) -> dict[str, Any]:
    """The ``models`` section: alias chat over the named simulators with their weights."""
    return {"chat": {"deployments": [
        {"name": name, "backend": "openai_http", "url": sim.base_url, "model": "sim",
         "weight": weight} for name, sim, weight in sims]}}


@pytest.fixture
def running(make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
            store_url: str, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[str, Admin, RunningSimulator, RunningSimulator]]:
    """A gateway with a bootstrap admin key over simulator a; simulator b is up, unused."""
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    a, b = simulators(), simulators()
    config = make_config(models(("a", a, 1.0)), store_url)
    with gateway(config) as base_url:
        yield base_url, Admin(base_url, ADMIN), a, b


def approver_id(admin: Admin, name: str) -> str:
    """The key id of the key called ``name``."""
    return str(next(k["id"] for k in admin("GET", "/admin/keys")["data"] if k["name"] == name))


def refused(call: Callable[[], Any], status: int, text: str) -> None:
    with pytest.raises(AdminError) as error:
        call()
    assert str(error.value).startswith(f"{status}:") and text in str(error.value)


def send_chats(base_url: str, token: str, count: int = 4) -> list[str]:
    """Send ``count`` chat requests; the deployment each record says served it."""
    with openai.OpenAI(base_url=base_url, api_key=token, max_retries=0) as sdk:
        ids = [sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=2).headers["x-request-id"]
            for _ in range(count)]
    return ids


def test_the_file_seeds_version_one_and_every_record_carries_its_version(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator], store_url: str) -> None:
    base_url, admin, _, _ = running
    shown = admin("GET", "/admin/config")
    assert (shown["version"], shown["serving"], shown["applied_by"]) == (1, 1, "config-file")
    assert "chat:" in shown["config"] and "server" not in shown["config"]
    ids = send_chats(base_url, ADMIN, 2)
    records = _records(store_url, ids)
    assert [r.config_version for r in records] == [1, 1]


def test_a_viewer_cannot_propose_and_an_author_cannot_approve_their_own_change(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator]) -> None:
    base_url, admin, a, b = running
    viewer, approver = admin.key("viewer", "vic"), admin.key("approver", "bob")
    refused(lambda: viewer.propose({"models": models(("b", b, 1.0))}), 403, "viewer")
    change = admin.propose({"models": models(("b", b, 1.0))}, "move chat to b")
    assert change["status"] == "pending" and change["needs_approval"]
    assert change["sections"] == ["models"]
    assert "-      url: " + a.base_url in change["diff"]
    assert "+      url: " + b.base_url in change["diff"]
    refused(lambda: admin.review(change["change_id"], True), 403, "author")
    refused(lambda: admin.apply(change["change_id"]), 403, "approval")
    refused(lambda: approver.apply(change["change_id"]), 403, "approver")  # reviewers only review
    assert approver.review(change["change_id"], True, "ok")["status"] == "approved"
    applied = admin.apply(change["change_id"])
    assert (applied["status"], applied["applied_version"]) == ("applied", 2)
    wait_for_version(base_url, 2, ADMIN)


def test_a_rejected_change_is_never_applied(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator], store_url: str) -> None:
    base_url, admin, _, b = running
    approver = admin.key("approver", "bob")
    change = admin.propose({"models": models(("b", b, 1.0))})
    assert approver.review(change["change_id"], False, "not now")["status"] == "rejected"
    refused(lambda: admin.apply(change["change_id"]), 409, "rejected")
    refused(lambda: admin.apply(change["change_id"], break_glass=True), 409, "rejected")
    refused(lambda: approver.review(change["change_id"], True), 409, "rejected")
    history = admin("GET", "/admin/config/history")
    assert [v["version"] for v in history["versions"]] == [1]
    ids = send_chats(base_url, ADMIN, 2)
    assert {r.deployment for r in _records(store_url, ids)} == {"a"}


def test_a_section_that_needs_a_restart_is_refused_at_propose_time(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator]) -> None:
    _, admin, _, _ = running
    refused(lambda: admin.propose({"server": {"port": 1}}), 400,
            "server cannot change while the gateway runs")
    refused(lambda: admin.propose({"store": {"url": "sqlite:///elsewhere.db"}}), 400,
            "store cannot change while the gateway runs")
    refused(lambda: admin.propose({"limits": {"state_url": "redis://127.0.0.1:1/0"}}), 400,
            "limits.state_url cannot change")
    refused(lambda: admin.propose({"models": {}}), 400, "at least one model alias")
    refused(lambda: admin.propose({"limits": {}}), 400, "changes nothing")


def test_changing_which_sections_need_approval_always_needs_approval(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator]) -> None:
    base_url, admin, _, _ = running
    approver = admin.key("approver", "bob")
    loosen = admin.propose({"governance": {"approval_required": ["models"]}})
    assert loosen["needs_approval"]
    refused(lambda: admin.apply(loosen["change_id"]), 403, "approval")
    approver.review(loosen["change_id"], True)
    admin.apply(loosen["change_id"])
    wait_for_version(base_url, 2, ADMIN)
    # limits no longer need approval: the author applies alone
    limits = admin.propose({"limits": {"models": {"chat": {"rpm": 100}}}})
    assert not limits["needs_approval"]
    assert admin.apply(limits["change_id"])["applied_version"] == 3


def test_break_glass_applies_at_once_loudly_and_demands_a_review(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator], store_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    base_url, admin, _, b = running
    approver = admin.key("approver", "bob")
    with caplog.at_level(logging.WARNING, "switchgear.governance"):
        change = admin("POST", "/admin/config/changes", {
            "sections": {"models": models(("b", b, 1.0))}, "message": "a is down",
            "break_glass": True})
    assert change["status"] == "applied" and change["break_glass"] and change["review_required"]
    assert any("BREAK-GLASS" in r.message and r.levelno == logging.WARNING
               for r in caplog.records)
    assert admin("GET", "/admin/config?version=2")["break_glass"]
    wait_for_version(base_url, 2, ADMIN)
    assert {r.deployment for r in _records(store_url, send_chats(base_url, ADMIN))} == {"b"}
    refused(lambda: admin.review(change["change_id"], True), 403, "author")
    reviewed = approver.review(change["change_id"], True, "fine in hindsight")
    assert (reviewed["status"], reviewed["review_required"]) == ("applied", False)
    trail = admin("GET", "/admin/audit?limit=100")["data"]
    config_actions = [(e["action"], e["actor"]) for e in reversed(trail)
                      if e["action"].startswith("config.") and e["target"] == change["change_id"]]
    assert config_actions == [("config.propose", "bootstrap"), ("config.break_glass", "bootstrap"),
                              ("config.approve", approver_id(admin, "bob"))]


def test_rollback_restores_the_route_and_the_rate_limit_exactly(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator], store_url: str) -> None:
    base_url, admin, a, b = running
    approver = admin.key("approver", "bob")
    client = admin.key("client", "app")
    change = admin.propose({"models": models(("a", a, 1.0), ("b", b, 1.0)),
                            "limits": {"tenants": {"ops": {"rpm": 2}}}}, "b beside a, and a limit")
    approver.review(change["change_id"], True)
    admin.apply(change["change_id"])
    wait_for_version(base_url, 2, ADMIN)
    assert serving_version(base_url, ADMIN) == 2
    with openai.OpenAI(base_url=base_url, api_key=client.token, max_retries=0) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
    routed = {r.deployment for r in _records(store_url, send_chats(base_url, ADMIN, 12))}
    assert routed == {"a", "b"}

    back = admin("POST", "/admin/config/rollback", {"version": 1})
    assert back["rollback_of"] == 1 and back["needs_approval"]
    approver.review(back["change_id"], True)
    assert admin.apply(back["change_id"])["applied_version"] == 3
    wait_for_version(base_url, 3, ADMIN)
    assert admin("GET", "/admin/config?version=3")["config"] == \
        admin("GET", "/admin/config?version=1")["config"]
    with openai.OpenAI(base_url=base_url, api_key=client.token, max_retries=0) as sdk:
        ids = [sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=2).headers["x-request-id"]
            for _ in range(6)]  # no limit any more
    records = _records(store_url, ids)
    assert {(r.deployment, r.config_version, r.status) for r in records} == {("a", 3, 200)}


def _records(store_url: str, request_ids: list[str]) -> list[Any]:
    """The records of ``request_ids``, once written."""
    import time

    deadline = time.monotonic() + 10
    while True:
        found = {r.request_id: r for r in fetch_records(store_url) if r.request_id in request_ids}
        if len(found) == len(request_ids) or time.monotonic() > deadline:
            return [found[i] for i in request_ids if i in found]
        time.sleep(0.05)


def test_a_stream_in_flight_finishes_on_the_old_version_while_new_requests_use_the_new(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    slow = simulators(ModelOptions(ttft_ms=2, tpot_ms=40, mean_output_tokens=30,
                                   output_spread=0, seed=1))
    fast = simulators()
    with gateway(make_config(models(("a", slow, 1.0)), store_url)) as base_url, \
            openai.OpenAI(base_url=base_url, api_key=ADMIN, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="chat", messages=HELLO, max_tokens=30, stream=True)
        chunks = iter(raw.parse())
        first = next(chunks)
        break_glass(base_url, ADMIN, {"models": models(("b", fast, 1.0))})
        rest = list(chunks)
        after = send_chats(base_url, ADMIN, 1)
    assert first.choices and rest and rest[-1].choices[0].finish_reason == "length"
    old, new = _records(store_url, [raw.headers["x-request-id"], *after])
    assert (old.deployment, old.config_version, old.status, old.completion_tokens) == \
        ("a", 1, 200, 30)
    assert (new.deployment, new.config_version) == ("b", 2)


def test_url_passwords_in_a_config_never_leave_through_the_admin_api(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator]) -> None:
    _, admin, _, _ = running
    # a password is never kept in a version: only each replica's file holds it
    refused(lambda: admin.propose({"cache": {"url": "redis://:s3cret-pw@127.0.0.1:6379/0"}}),
            400, "cache.url: the password of redis://:***@127.0.0.1:6379/0 is not kept")
    assert admin("GET", "/admin/config/changes")["data"] == []


def test_bad_admin_input_gets_a_clear_openai_shaped_error(
        running: tuple[str, Admin, RunningSimulator, RunningSimulator]) -> None:
    _, admin, _, _ = running
    refused(lambda: admin("GET", "/admin/config?version=%C2%B2"), 400, "version must be")
    refused(lambda: admin("GET", f"/admin/config?version={2**70}"), 400, "version must be")
    refused(lambda: admin("GET", "/admin/config?version=9"), 404, "No config version 9")
    refused(lambda: admin("POST", "/admin/config/rollback", {"version": 2**70}), 400,
            "version must be")
    refused(lambda: admin("POST", "/admin/config/changes", {"sections": []}), 400,
            "sections must be a mapping")
    refused(lambda: admin("POST", "/admin/config/changes", {"sections": {}, "config": {}}),
            400, "either config")
    refused(lambda: admin.apply("chg_nope"), 404, "No change request chg_nope")
    refused(lambda: admin("POST", "/admin/config/changes/chg_nope/merge", {}), 404, "Unknown")


def test_a_replica_started_later_serves_the_applied_version_not_its_file(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    a, b = simulators(), simulators()
    config = make_config(models(("a", a, 1.0)), store_url)
    with gateway(config) as base_url:
        break_glass(base_url, ADMIN, {"models": models(("b", b, 1.0))})
    with gateway(config) as base_url:
        assert serving_version(base_url, ADMIN) == 2
        ids = send_chats(base_url, ADMIN, 2)
    assert {(r.deployment, r.config_version) for r in _records(store_url, ids)} == {("b", 2)}
