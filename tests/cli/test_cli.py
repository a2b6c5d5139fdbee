"""The `switchgear` command: help on every command, version, refusal of a bad config, what a
command says when no gateway answers, `wait`, and `serve` on a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner

from switchgear import __version__
from switchgear.cli.admin_client import Unreachable, admin_call
from switchgear.cli.main import main
from switchgear.config import Config

from servers import BackgroundLoop, aiohttp_server, free_port, gateway


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["simulate", "--help"],
                                  ["routes", "--help"], ["latency", "report", "--help"],
                                  ["quality", "--help"],
                                  ["audit", "verify", "--help"], ["audit", "list", "--help"],
                                  ["wait", "--help"]])
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


SIM = {"deployments": [{"name": "local", "backend": "simulated"}]}

#: Commands that call a gateway's admin API, one of each kind of module that does.
GATEWAY_COMMANDS = [
    ["keys", "create", "--tenant", "acme", "--name", "web"],
    ["keys", "list"],
    ["routes"],
    ["audit", "list"],
    ["cost", "report"],
    ["config", "history"],
    ["prompts", "list"],
    ["changes"],
]


@pytest.fixture
def nobody(refused_url: Callable[..., str]) -> str:
    """The URL of a loopback port that refuses connections."""
    return refused_url()


@pytest.mark.parametrize("command", GATEWAY_COMMANDS, ids=" ".join)
def test_a_command_with_no_gateway_running_says_so_and_exits_2(nobody: str,
                                                               command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--url", nobody])
    assert result.exit_code == 2, result.output
    assert (f"cannot reach the gateway at {nobody} (connection refused): is it running? "
            "start it with `switchgear serve` (or pass --url)") in result.output
    assert "Errno" not in result.output and "urlopen" not in result.output


def test_an_unknown_host_is_named() -> None:
    result = CliRunner().invoke(main, ["keys", "list", "--url", "http://no-such-host.invalid:8080"])
    assert result.exit_code == 2, result.output
    assert "(unknown host 'no-such-host.invalid'): check --url" in result.output


def test_a_url_without_a_scheme_is_refused_in_words() -> None:
    result = CliRunner().invoke(main, ["routes", "--url", "127.0.0.1:8080"])
    assert result.exit_code == 2, result.output
    assert "is not a gateway URL: pass it as http://HOST:PORT" in result.output


def test_a_server_that_never_answers_times_out_in_words() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(Unreachable, match=r"\(no answer within 0.3 s\)"):
            admin_call(url, "GET", "/admin/keys", timeout=0.3)


@pytest.fixture
def not_a_gateway(background: BackgroundLoop) -> Iterator[str]:
    """Another web server: HTML at /, a 404 page elsewhere."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>hi</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/admin/keys", page)
    with aiohttp_server(app, background) as url:
        yield url


@pytest.mark.parametrize(("command", "said"), [
    (["keys", "list"], "answered /admin/keys with something other than JSON"),
    (["routes"], "answered /admin/routing with 404 Not Found and no Switchgear error"),
])
def test_a_server_that_is_not_a_gateway_is_named(not_a_gateway: str, command: list[str],
                                                 said: str) -> None:
    result = CliRunner().invoke(main, [*command, "--url", not_a_gateway])
    assert result.exit_code == 2, result.output
    assert f"the server at {not_a_gateway} {said}: is --url a Switchgear gateway?" in result.output


def test_a_refusal_by_the_gateway_still_exits_1(make_config: Callable[..., Config],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHGEAR_ADMIN_KEY", "sg-test-admin-secret-0123456789abcdef")
    with gateway(make_config({"sim": SIM})) as base_url:
        result = CliRunner().invoke(main, ["keys", "list", "--url", base_url.removesuffix("/v1"),
                                           "--admin-key", "sg-wrong-0123456789abcdef0123456789"])
    assert result.exit_code == 1, result.output
    assert "401" in result.output


def test_wait_returns_at_once_for_a_ready_gateway(make_config: Callable[..., Config]) -> None:
    with gateway(make_config({"sim": SIM})) as base_url:
        result = CliRunner().invoke(main, ["wait", "--url", base_url.removesuffix("/v1")])
    assert result.exit_code == 0, result.output
    assert "is ready" in result.output


def test_wait_gives_up_on_no_gateway_saying_why(nobody: str) -> None:
    result = CliRunner().invoke(main, ["wait", "--url", nobody, "--timeout", "1"])
    assert result.exit_code == 1, result.output
    assert "not ready after 1 s" in result.output and "connection refused" in result.output


def test_wait_gives_up_on_an_unready_gateway_naming_what_it_waits_for(
        make_config: Callable[..., Config], nobody: str) -> None:
    dead = {"deployments": [{"name": "upstream", "backend": "openai_http", "url": nobody + "/v1"}]}
    with gateway(make_config({"m": dead})) as base_url:
        result = CliRunner().invoke(main, ["wait", "--url", base_url.removesuffix("/v1"),
                                           "--timeout", "1"])
    assert result.exit_code == 1, result.output
    assert "is up but not ready (m/upstream:" in result.output


def test_wait_follows_a_gateway_that_comes_up(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "switchgear.yaml"
    config.write_text(yaml.safe_dump({"models": {"sim": SIM},
                                      "store": {"url": f"sqlite:///{tmp_path}/records.db"},
                                      "server": {"drain_grace_s": 0}}))
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "switchgear", "serve", "--config",
                                    str(config), "--port", str(port), "--log-level", "warning"],
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        result = CliRunner().invoke(main, ["wait", "--url", f"http://127.0.0.1:{port}",
                                           "--timeout", "60"])
    finally:
        process.terminate()
        process.wait(30)
    assert result.exit_code == 0, f"{result.output}\nthe gateway said:\n{log.read_text()}"


def test_serve_on_a_busy_port_says_so_without_claiming_ready(tmp_path: Path) -> None:
    config = tmp_path / "switchgear.yaml"
    config.write_text(yaml.safe_dump({"models": {"sim": SIM},
                                      "store": {"url": f"sqlite:///{tmp_path}/records.db"},
                                      "server": {"drain_grace_s": 0}}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "switchgear", "serve", "--config",
                               str(config), "--port", str(port)],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert (f"switchgear: port {port} on 127.0.0.1 is in use (another process listens there, "
            "perhaps another gateway): stop it, or pass --port") in done.stderr
    assert "ready" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "records.db").exists()
