"""The config file as a person writes it: YAML's own spellings, errors in the file's words, and
everything the environment lacks named at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import ConfigError, load_config, missing_environment, parse_config
from switchgear.governance.versions import config_text, serving_config

SIM = {"deployments": [{"name": "local", "backend": "simulated"}]}


def write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_yaml_off_means_the_off_mode_wherever_a_setting_has_one(tmp_path: Path) -> None:
    path = write(tmp_path / "off.yaml", """
models:
  chat: {deployments: [{name: a, backend: simulated}]}
  other: {deployments: [{name: b, backend: simulated}]}
  split: {variants: [{model: chat, weight: 1}, {model: other, weight: 1}], sticky: off}
cache:
  cacheable: off
  keys: {key_a: off, key_b: all}
  routes: {chat: false}
routing:
  health_check_interval_s: off
""")
    config = load_config(path)
    assert config.cache.cacheable == "off"
    assert config.cache.keys == {"key_a": "off", "key_b": "all"}
    assert config.cache.routes == {"chat": "off"}
    assert config.models["split"].sticky == "none"
    assert config.routing.health_check_interval_s is None
    # stored as a version and read back, it is still the off mode
    again = serving_config(config_text(config), config)
    assert (again.cache, again.routing) == (config.cache, config.routing)
    with pytest.raises(ConfigError, match=r"cache\.cacheable: must be one of"):
        parse_config({"cache": {"cacheable": True}})


def test_a_config_error_names_each_field_in_plain_words(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """
server: {prot: 8080}
cache: {cacheable: sometimes, ttl_s: 0}
guards: {input: {check: pii}}
models:
  chat: {deployments: [{name: a, backend: openai_http}]}
""")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "server.prot: is not a setting (did you mean port?)" in message
    assert ("cache.cacheable: must be one of 'deterministic', 'all' or 'off' "
            '(got "sometimes")') in message
    assert "cache.ttl_s: must be more than 0 (got 0)" in message
    assert "guards.input: must be a list" in message
    assert "models.chat.deployments.0: an openai_http deployment needs a url" in message
    for internal in ("Value error", "Input should", "instance of", "GuardList", "[type=",
                     "pydantic"):
        assert internal not in message


def test_a_problem_of_the_whole_config_has_no_made_up_location() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"auth": {"mode": "open"}, "server": {"host": "0.0.0.0"}}, "my.yaml")
    assert str(raised.value) == ("my.yaml: auth.mode open is only allowed on a loopback "
                                 "address, not 0.0.0.0")


def test_every_missing_environment_variable_is_named_in_one_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SG_TEST_KEY_A", "SG_TEST_KEY_B", "SG_TEST_HOOK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "keys.yaml", {
        "store": {"url": f"sqlite:///{tmp_path}/records.db"},
        "models": {"chat": {"deployments": [
            {"name": "a", "backend": "openai_http", "url": "http://127.0.0.1:9/v1",
             "api_key_env": "SG_TEST_KEY_A"},
            {"name": "b", "backend": "openai_http", "url": "http://127.0.0.1:9/v1",
             "api_key_env": "SG_TEST_KEY_B"}]}},
        "slo": {"objectives": [{"name": "up", "owner": "ops", "sli": {"kind": "availability"},
                                "target": 0.99, "window": "1d",
                                "alerting": {"webhook_url_env": "SG_TEST_HOOK"}}]}})
    result = CliRunner().invoke(main, ["serve", "--config", "keys.yaml"])  # relative to the cwd
    assert result.exit_code == 2, result.output
    assert "environment variables not set: " in result.output
    for named in ("SG_TEST_KEY_A (models.chat.deployments.0.api_key_env)",
                  "SG_TEST_KEY_B (models.chat.deployments.1.api_key_env)",
                  "SG_TEST_HOOK (slo.objectives.0.alerting.webhook_url_env)"):
        assert named in result.output
    assert "Traceback" not in result.output


def test_patterns_that_cannot_run_together_are_a_config_error_not_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "guards.yaml", {
        "store": {"url": f"sqlite:///{tmp_path}/records.db"}, "models": {"chat": SIM},
        "guards": {"input": [{"check": "patterns", "action": "block",
                              "patterns": ["(?P<id>ab-\\d+)", "(?P<id>cd-\\d+)"]}]}})
    result = CliRunner().invoke(main, ["serve", "--config", "guards.yaml"])
    assert result.exit_code == 2, result.output
    assert "guards.input.0: the patterns cannot be used together: redefinition of group " \
           "name 'id'" in result.output


def test_urls_with_passwords_can_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """store.url_env, limits.state_url_env and cache.url_env name the variable holding the URL:
    it wins over the file's URL, an unset one is reported with the others, a wrong one is refused
    without showing its value, and a config version keeps the name and a masked URL."""
    sections = {"store": {"url": "sqlite:///file.db", "url_env": "TEST_STORE_URL"},
                "limits": {"state_url_env": "TEST_REDIS_URL"},
                "cache": {"url_env": "TEST_REDIS_URL"}}
    monkeypatch.delenv("TEST_STORE_URL", raising=False)
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    unset = parse_config(sections)
    assert unset.store.url == "sqlite:///file.db" and unset.limits.state_url is None
    assert missing_environment(unset) == ["TEST_STORE_URL (store.url_env)",
                                          "TEST_REDIS_URL (limits.state_url_env)",
                                          "TEST_REDIS_URL (cache.url_env)"]
    monkeypatch.setenv("TEST_STORE_URL", "postgresql://gw:pg-s3cret@db:5432/gateway")
    monkeypatch.setenv("TEST_REDIS_URL", "rediss://:redis-s3cret@cache:6380/0")
    config = parse_config(sections)
    assert config.store.url == "postgresql://gw:pg-s3cret@db:5432/gateway"
    assert config.limits.state_url == config.cache.url == "rediss://:redis-s3cret@cache:6380/0"
    assert missing_environment(config) == []
    stored = config_text(config)
    assert "s3cret" not in stored and "state_url_env: TEST_REDIS_URL" in stored
    assert serving_config(stored, config).limits.state_url == config.limits.state_url
    monkeypatch.setenv("TEST_REDIS_URL", "http://user:hunter2@cache/0")
    with pytest.raises(ConfigError, match=r"limits\.state_url: must start with redis") as caught:
        parse_config(sections)
    assert "hunter2" not in str(caught.value)
