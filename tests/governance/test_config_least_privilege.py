"""Least privilege for config (issue 20, hostile insiders), over real HTTP: an operator cannot
break glass unless governance.break_glass_roles says so; no config may name the gateway's own
secrets as a credential to send out; a change that sends a credential to a new or re-pointed
upstream needs another key's approval, even where its section needs none and whoever may break
glass; approvers read what they review; no URL password is kept in a stored version. A real
aiohttp server stands in for the attacker's URL and records every Authorization header."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from aiohttp import web

from switchgear.config import Config, ConfigError, parse_config
from switchgear.governance.versions import ConfigVersions, config_text, serving_config
from switchgear.simulator.server import RunningSimulator
from switchgear.store import open_store

from servers import BackgroundLoop, aiohttp_server, gateway

ADMIN = "sg-lp-admin-0123456789abcdef0123456789ab"
UPSTREAM = "sg-lp-upstream-secret-0123456789"
#: Longer than a health-check round at the interval these gateways use.
WATCH_S = 1.5


class Attacker:
    """A server at a URL of the attacker's choosing: records each Authorization header."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            self.seen.append(request.headers.get("Authorization", ""))
            return web.json_response({"object": "list", "data": []})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app


@pytest.fixture
def attacker(background: BackgroundLoop) -> Iterator[tuple[str, Attacker]]:
    spy = Attacker()
    with aiohttp_server(spy.app(), background) as url:
        yield url + "/v1", spy


def call(root: str, token: str, method: str, path: str, body: Any = None
         ) -> tuple[int, Any]:
    response = urllib3.request(method, root + path, json=body, timeout=10,
                               headers={"Authorization": f"Bearer {token}"})
    return response.status, response.json()


def key(root: str, role: str, name: str) -> str:
    status, created = call(root, ADMIN, "POST", "/admin/keys",
                           {"tenant": "ops", "name": name, "role": role})
    assert status == 201, created
    return str(created["secret"])


def hostile(url: str, env: str, name: str = "evil") -> dict[str, Any]:
    return {"name": name, "backend": "openai_http", "url": url, "model": "x",
            "api_key_env": env}


def models(sim: RunningSimulator, *extra: dict[str, Any]) -> dict[str, Any]:
    return {"chat": {"deployments": [
        {"name": "a", "backend": "openai_http", "url": sim.base_url, "model": "sim"},
        *extra]}}


@pytest.fixture
def running(make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
            monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., Iterator[tuple[str, RunningSimulator]]]:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SG_LP_UPSTREAM_KEY", UPSTREAM)

    def start(**governance: Any) -> Iterator[tuple[str, RunningSimulator]]:
        sim = simulators()
        config = make_config(models(sim), None)
        data = config.model_dump(mode="json", exclude_defaults=True)
        data["routing"] = {"health_check_interval_s": 0.1}
        data["governance"] = governance
        with gateway(parse_config(data)) as base_url:
            yield base_url.removesuffix("/v1"), sim

    return start


def test_an_operator_cannot_break_glass_by_default(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]],
        attacker: tuple[str, Attacker]) -> None:
    url, spy = attacker
    for root, sim in running():
        operator = key(root, "operator", "opal")
        status, body = call(root, operator, "POST", "/admin/config/changes", {
            "sections": {"models": models(sim, hostile(url, "SG_LP_UPSTREAM_KEY"))},
            "break_glass": True})
        assert status == 403, body
        assert body["error"]["type"] == "permission_error" or body["error"]["code"]
        assert "break glass" in body["error"]["message"]
        assert "break_glass_roles" in body["error"]["message"]
        time.sleep(WATCH_S)
        assert call(root, ADMIN, "GET", "/admin/config")[1]["serving"] == 1
    assert spy.seen == []


@pytest.mark.parametrize("env", ["SWITCHGEAR_ADMIN_KEY", "SWITCHGEAR_AUDIT_SECRET",
                                 "SWITCHGEAR_ANYTHING"])
def test_no_config_may_send_the_gateways_own_secrets_anywhere(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]],
        attacker: tuple[str, Attacker], env: str) -> None:
    url, spy = attacker
    for root, sim in running(break_glass_roles=["admin", "operator"], approval_required=[]):
        operator = key(root, "operator", "opal")
        for token in (operator, ADMIN):
            status, body = call(root, token, "POST", "/admin/config/changes", {
                "sections": {"models": models(sim, hostile(url, env))}, "break_glass": True})
            assert status == 400, body
            assert "models.chat.deployments.1.api_key_env" in body["error"]["message"]
            assert f"{env} is one of the gateway's own secrets" in body["error"]["message"]
        time.sleep(WATCH_S)
    assert spy.seen == []


def test_the_file_itself_may_not_name_them_and_the_allow_list_narrows(tmp_path: Path) -> None:
    deployment = hostile("http://127.0.0.1:9/v1", "SWITCHGEAR_ADMIN_KEY")
    with pytest.raises(ConfigError, match=r"deployments\.0\.api_key_env: SWITCHGEAR_ADMIN_KEY"):
        parse_config({"models": {"m": {"deployments": [deployment]}}})
    own = {**deployment, "api_key_env": "MY_ADMIN"}
    with pytest.raises(ConfigError, match="MY_ADMIN is one of the gateway's own secrets"):
        parse_config({"auth": {"admin_key_env": "MY_ADMIN"},
                      "models": {"m": {"deployments": [own]}}})
    audit = {**deployment, "api_key_env": "MY_AUDIT"}
    with pytest.raises(ConfigError, match="MY_AUDIT is one of"):
        parse_config({"governance": {"audit_secret_env": "MY_AUDIT"},
                      "models": {"m": {"deployments": [audit]}}})
    hook = {"models": {"m": {"deployments": [{"name": "s", "backend": "simulated"}]}},
            "slo": {"objectives": [{"name": "o", "owner": "me", "sli": {"kind": "availability"},
                                "target": 0.99,
                                    "alerting": {"webhook_url_env": "SWITCHGEAR_AUDIT_SECRET"}}]}}
    with pytest.raises(ConfigError, match="webhook_url_env: SWITCHGEAR_AUDIT_SECRET"):
        parse_config(hook)
    narrow = {"governance": {"upstream_env": ["PROVIDER_*"]},
              "models": {"m": {"deployments": [{**deployment, "api_key_env": "OTHER_KEY"}]}}}
    with pytest.raises(ConfigError, match=r"OTHER_KEY is not allowed by governance\.upstream_env"):
        parse_config(narrow)
    narrow["models"]["m"]["deployments"][0]["api_key_env"] = "PROVIDER_KEY"  # type: ignore[index]
    assert parse_config(narrow).models["m"].deployments[0].api_key_env == "PROVIDER_KEY"


def test_a_credential_sent_to_a_new_upstream_needs_another_keys_approval(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]],
        attacker: tuple[str, Attacker]) -> None:
    url, spy = attacker
    for root, sim in running(break_glass_roles=["admin", "operator"], approval_required=[]):
        operator, approver = key(root, "operator", "opal"), key(root, "approver", "bob")
        sections = {"models": models(sim, hostile(url, "SG_LP_UPSTREAM_KEY"))}
        status, body = call(root, operator, "POST", "/admin/config/changes",
                            {"sections": sections, "break_glass": True})
        assert status == 403 and "only an admin" in body["error"]["message"], body
        status, change = call(root, operator, "POST", "/admin/config/changes",
                              {"sections": sections})
        assert status == 201 and change["needs_approval"], change
        change_id = change["change_id"]
        status, body = call(root, operator, "POST", f"/admin/config/changes/{change_id}/apply",
                            {})
        assert status == 403 and "approval" in body["error"]["message"], body
        status, body = call(root, operator, "POST", f"/admin/config/changes/{change_id}/apply",
                            {"break_glass": True})
        assert status == 403 and "only an admin" in body["error"]["message"], body
        time.sleep(WATCH_S)
        assert spy.seen == []
        # the approver reads what it is asked to approve, then approves it
        status, shown = call(root, approver, "GET", f"/admin/config/changes/{change_id}")
        assert status == 200 and url in shown["diff"], shown
        status, listed = call(root, approver, "GET", "/admin/config/changes")
        assert status == 200 and listed["data"][0]["change_id"] == change_id
        status, body = call(root, approver, "POST", f"/admin/config/changes/{change_id}/review",
                            {"approve": True})
        assert status == 200, body
        status, body = call(root, operator, "POST", f"/admin/config/changes/{change_id}/apply",
                            {})
        assert status == 200 and body["applied_version"] == 2, body
        deadline = time.monotonic() + 10
        while not spy.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        # re-pointing that credentialed deployment needs approval again
        moved = {"models": models(sim, hostile(url + "/elsewhere", "SG_LP_UPSTREAM_KEY"))}
        status, again = call(root, operator, "POST", "/admin/config/changes",
                             {"sections": moved})
        assert status == 201 and again["needs_approval"], again
        # one that leaves the credentialed upstream as it is does not
        status, weight = call(root, operator, "POST", "/admin/config/changes", {"sections": {
            "models": models(sim, {**hostile(url, "SG_LP_UPSTREAM_KEY"), "weight": 2})}})
        assert status == 201 and not weight["needs_approval"], weight
    assert spy.seen and set(spy.seen) == {f"Bearer {UPSTREAM}"}
    assert not any(ADMIN in seen for seen in spy.seen)


def test_an_admin_may_still_break_glass_a_credentialed_change(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]],
        attacker: tuple[str, Attacker]) -> None:
    url, _ = attacker
    for root, sim in running():
        status, body = call(root, ADMIN, "POST", "/admin/config/changes", {
            "sections": {"models": models(sim, hostile(url, "SG_LP_UPSTREAM_KEY"))},
            "break_glass": True})
        assert status == 201 and body["break_glass"] and body["review_required"], body


def test_a_url_password_is_never_kept_in_a_stored_version(tmp_path: Path) -> None:
    secret_url = "redis://:s3cret-pw@127.0.0.1:6379/0"
    local = parse_config({"cache": {"url": secret_url},
                          "store": {"url": f"sqlite:///{tmp_path}/records.db"}})
    text = config_text(local)
    assert "s3cret" not in text and "redis://:***@127.0.0.1:6379/0" in text
    assert serving_config(text, local).cache.url == secret_url
    other = parse_config({"store": {"url": f"sqlite:///{tmp_path}/records.db"}})
    with pytest.raises(ConfigError, match=r"cache\.url: the password of"):
        serving_config(text, other)

    async def stored() -> str:
        store = open_store(local.store.url)
        await store.open()
        try:
            versions = ConfigVersions(store)
            await versions.seed(local)
            version = await versions.get(1)
            assert version is not None
            return version.config
        finally:
            await store.close()

    assert "s3cret" not in asyncio.run(stored())


def test_the_reported_attack_leaks_no_admin_key(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]],
        attacker: tuple[str, Attacker]) -> None:
    """The issue as reported, on a default config: an operator break-glasses a deployment at
    its own URL naming SWITCHGEAR_ADMIN_KEY; the health checker must never send it there."""
    url, spy = attacker
    for root, sim in running():
        operator = key(root, "operator", "opal")
        status, body = call(root, operator, "POST", "/admin/config/changes", {
            "sections": {"models": models(sim, hostile(url, "SWITCHGEAR_ADMIN_KEY"))},
            "break_glass": True})
        assert status in (400, 403), body
        assert set(body) == {"error"} and body["error"]["message"]
        time.sleep(WATCH_S)
    assert not any(ADMIN in seen for seen in spy.seen)


def test_an_approver_reads_the_change_it_is_asked_to_approve(
        running: Callable[..., Iterator[tuple[str, RunningSimulator]]]) -> None:
    for root, sim in running():
        approver = key(root, "approver", "bob")
        status, change = call(root, ADMIN, "POST", "/admin/config/changes", {
            "sections": {"models": models(sim, {"name": "s", "backend": "simulated"})}})
        assert status == 201, change
        status, shown = call(root, approver, "GET", f"/admin/config/changes/{change['change_id']}")
        assert status == 200 and shown["diff"] == change["diff"], shown
        status, listed = call(root, approver, "GET", "/admin/config/changes")
        assert status == 200 and [c["change_id"] for c in listed["data"]] == [change["change_id"]]
        assert call(root, approver, "POST", f"/admin/config/changes/{change['change_id']}/review",
                    {"approve": True})[0] == 200
