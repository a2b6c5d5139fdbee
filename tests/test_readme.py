"""README.md's examples, loaded as a newcomer would run them, so the docs cannot rot.

Every YAML block is a complete config (validated as `switchgear serve` reads it, then served) or
starts with ``# fragment of examples/NAME.yaml`` and is part of that complete example, which is
validated and served in its turn. Every `switchgear` command in a shell block parses as written;
shell blocks call `python3` (stock Debian has no `python`); the Python blocks compile, and the
first runs against a real gateway on the embedded model.
"""

from __future__ import annotations

import re
import shlex
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from openai import OpenAI

from switchgear.cli.main import main as cli
from switchgear.config import Config, load_config, missing_environment

from readme import blocks
from servers import gateway

ROOT = Path(__file__).resolve().parent.parent
FRAGMENT = re.compile(r"^# fragment of (examples/[\w.-]+\.yaml)\b")


def complete_configs() -> Iterator[tuple[str, Path]]:
    """(where, text) of every complete config: unmarked YAML blocks and the examples named."""
    for line, text in blocks("yaml"):
        if not FRAGMENT.match(text):
            yield f"README.md:{line}", text
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        yield str(path.relative_to(ROOT)), path.read_text()


def read_config(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """``text`` loaded as `switchgear serve --config` loads it, every ``*_env`` variable set."""
    path = tmp_path / "switchgear.yaml"
    path.write_text(text)
    config = load_config(path)
    for missing in missing_environment(config):
        monkeypatch.setenv(missing.split()[0], "placeholder-secret")
    return load_config(path)


def contains(whole: Any, part: Any) -> bool:
    """``part`` is ``whole`` with some mapping keys left out (lists and values as they are)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v)
                                               for k, v in part.items())
    return bool(whole == part)


CONFIGS = list(complete_configs())


@pytest.mark.parametrize("line,text", blocks("yaml"), ids=lambda v: str(v)[:12])
def test_every_fragment_is_part_of_the_complete_example_it_names(line: int, text: str) -> None:
    marked = FRAGMENT.match(text)
    if marked is None:
        return  # complete: served below
    example = ROOT / marked[1]
    assert example.exists(), f"README.md:{line} names {marked[1]}, which does not exist"
    assert contains(yaml.safe_load(example.read_text()), yaml.safe_load(text)), (
        f"README.md:{line} is not part of {marked[1]}")


@pytest.mark.parametrize("where,text", CONFIGS, ids=[where for where, _ in CONFIGS])
def test_every_complete_config_is_valid_and_serves(
        where: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # its custom guard check, checks.py
    config = read_config(text, tmp_path, monkeypatch)
    # Its own store, and no traffic to the example's placeholder upstreams, webhooks or collector.
    config = config.model_copy(update={
        "store": config.store.model_copy(update={"url": f"sqlite:///{tmp_path}/records.db"}),
        "routing": config.routing.model_copy(update={"health_check_interval_s": None}),
        "telemetry": config.telemetry.model_copy(update={"otlp_endpoint": None})})
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        with urllib.request.urlopen(root + "/healthz", timeout=10) as response:
            assert response.status == 200, where


def switchgear_commands() -> Iterator[tuple[int, list[str]]]:
    """(block line, words) of every `switchgear …` command in README's shell blocks."""
    for line, text in blocks("sh", "bash"):
        for command in text.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words[:1] == ["switchgear"]:
                yield line, words[1:]


COMMANDS = list(switchgear_commands())


@pytest.mark.parametrize("line,words", COMMANDS, ids=[" ".join(w[:2]) for _, w in COMMANDS])
def test_every_switchgear_command_parses(line: int, words: list[str], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for word in words:  # files the command reads must exist for click to accept the words
        if re.fullmatch(r"[\w.-]+\.(json|yaml|jsonl)", word):
            Path(word).write_text("{}")
    command: click.Command = cli
    parent = None
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        parent = click.Context(command, info_name=command.name, parent=parent)
        found = command.get_command(parent, words[0])
        assert found is not None, f"README.md:{line}: no command {words[0]}"
        command, words = found, words[1:]
    try:
        command.make_context(command.name, words, parent=parent)
    except click.exceptions.Exit as done:  # --help, --version
        assert done.exit_code == 0


def test_shell_blocks_call_python3() -> None:
    for line, text in blocks("sh", "bash"):
        assert not re.search(r"(^|[\s($])python\s", text, re.M), f"README.md:{line} calls python"


@pytest.mark.parametrize("line,text", blocks("python"), ids=lambda v: str(v)[:12])
def test_python_blocks_compile(line: int, text: str) -> None:
    compile(text, f"README.md:{line}", "exec")


@pytest.mark.model
def test_the_first_python_example_runs_against_the_embedded_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line, text = blocks("python")[0]
    config = load_config(None)
    config = config.model_copy(update={
        "store": config.store.model_copy(update={"url": f"sqlite:///{tmp_path}/records.db"})})
    with gateway(config) as base_url:
        assert '"http://127.0.0.1:8080/v1"' in text, f"README.md:{line} has another base URL"
        exec(compile(text.replace("http://127.0.0.1:8080/v1", base_url), "README.md", "exec"),
             {"OpenAI": OpenAI})
    printed = capsys.readouterr().out
    assert "CompletionUsage" in printed and printed.strip()
