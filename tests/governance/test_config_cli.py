"""`switchgear config ...` against a real gateway: propose a file, review, apply, show, diff,
history and roll back, as the commands print them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from switchgear.cli.admin_client import admin_call
from switchgear.cli.main import main
from switchgear.config import Config
from switchgear.simulator.server import RunningSimulator

from servers import gateway, wait_for_version

ADMIN = "sg-config-admin-0123456789abcdef01234567"


def test_the_config_commands_walk_a_change_from_proposal_to_rollback(
        make_config: Callable[..., Config], simulators: Callable[..., RunningSimulator],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    sim = simulators()
    chat = {"chat": {"deployments": [{"name": "a", "backend": "openai_http",
                                      "url": sim.base_url, "model": "sim"}]}}
    with gateway(make_config(chat)) as base_url:
        root = base_url.removesuffix("/v1")
        approver = admin_call(root, "POST", "/admin/keys", ADMIN,
                              {"tenant": "ops", "name": "bob", "role": "approver"})["secret"]

        def run(*args: str, key: str = ADMIN) -> str:
            result = CliRunner().invoke(main, ["config", *args, "--url", root,
                                               "--admin-key", key])
            assert result.exit_code == 0, result.output
            return result.output

        patch = tmp_path / "limits.yaml"
        patch.write_text(yaml.safe_dump({"limits": {"models": {"chat": {"rpm": 600}}}}))
        proposed = run("propose", str(patch), "--patch", "-m", "cap chat")
        change_id = proposed.split()[0]
        assert "pending" in proposed and "[limits] (needs approval)" in proposed
        assert "+  models:" in proposed and "+      rpm: 600" in proposed

        refused = CliRunner().invoke(main, ["config", "review", change_id, "--approve",
                                            "--url", root, "--admin-key", ADMIN])
        assert refused.exit_code == 1 and "cannot review it" in refused.output
        assert "approved" in run("review", change_id, "--approve", "-c", "ok", key=approver)
        assert "applied -> v2" in run("apply", change_id)
        wait_for_version(base_url, 2, ADMIN)

        assert "rpm: 600" in run("show") and "rpm" not in run("show", "--version", "1")
        assert "+      rpm: 600" in run("diff", "1", "2")
        history = run("history")
        assert "serving version 2" in history and "(config file)" in history

        back = run("rollback", "1", "--break-glass", "-m", "undo")
        assert "REVIEW REQUIRED -> v3" in back and "-      rpm: 600" in back
        wait_for_version(base_url, 3, ADMIN)
        assert "BREAK-GLASS" in run("show") and "rpm" not in run("show")


def test_proposing_a_config_the_gateway_cannot_serve_exits_2_naming_the_problem(
        make_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
    with gateway(make_config({"sim": {"deployments": [{"name": "s", "backend": "simulated"}]}})
                 ) as base_url:
        root = base_url.removesuffix("/v1")
        bad = tmp_path / "guards.yaml"
        bad.write_text(yaml.safe_dump({"guards": {"output": [
            {"check": "custom", "path": "no_such_module_sg:check"}]}}))
        result = CliRunner().invoke(main, ["config", "propose", str(bad), "--patch", "--url", root,
                                           "--admin-key", ADMIN])
        assert result.exit_code == 2, result.output  # as `serve` exits on an invalid config
        assert "400" in result.output and "no_such_module_sg" in result.output
        assert "Traceback" not in result.output
        history = admin_call(root, "GET", "/admin/config", ADMIN)
        assert history["serving"] == 1  # nothing was stored or applied
