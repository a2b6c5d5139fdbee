"""The `switchgear` command: help on every command, version, and refusal of a bad config."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from switchgear import __version__
from switchgear.cli.main import main


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["simulate", "--help"],
                                  ["routes", "--help"], ["latency", "report", "--help"],
                                  ["quality", "--help"],
                                  ["audit", "verify", "--help"], ["audit", "list", "--help"]])
def test_every_command_has_help(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert "--help" in result.output


def test_serve_help_names_its_options() -> None:
    output = CliRunner().invoke(main, ["serve", "--help"]).output
    for option in ("--config", "--host", "--port"):
        assert option in output


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("server: {port: 99999}\n", "server.port"),
        ("models: {m: {deployments: [{name: a, backend: warp}]}}\n", "models.m.deployments.0.backend"),
        ("models: {m: {deployments: [{name: a, backend: openai_http}]}}\n", "needs a url"),
        ("models: {m: {deployments: []}}\n", "either deployments or variants"),
        ("models: {m: {deployments: [{name: a, backend: simulated}], fallbacks: [x]}}\n",
         "not a model alias"),
        ("store: {url: 'mysql://x'}\n", "store.url"),
        ("surprise: 1\n", "surprise"),
        ("models: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_invalid_config_exits_2_naming_the_field(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert named in result.output
    assert "invalid config" in result.output


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_missing_api_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchgear.config import ConfigError, parse_config

    monkeypatch.delenv("SG_TEST_ABSENT_KEY", raising=False)
    config = parse_config({"models": {"m": {"deployments": [
        {"name": "a", "backend": "openai_http", "url": "http://127.0.0.1:1/v1",
         "api_key_env": "SG_TEST_ABSENT_KEY"}]}}})
    with pytest.raises(ConfigError, match="SG_TEST_ABSENT_KEY"):
        config.models["m"].deployments[0].api_key()


@pytest.mark.parametrize("window", ["24", "0h", "-1h", "xh", "infh", "3y"])
def test_latency_report_refuses_a_bad_window(window: str) -> None:
    result = CliRunner().invoke(main, ["latency", "report", "--window", window])
    assert result.exit_code == 2
    assert "--window" in result.output
