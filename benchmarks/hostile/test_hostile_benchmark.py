"""The hostile-input benchmark runs end to end on a small load and prints every figure and its
method; every kind of junk is built, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import load_script

bench = load_script(Path(__file__).resolve().parent / "run.py", "hostile_benchmark")


def test_a_short_run_prints_every_figure_and_the_method(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = bench.main(["--slow", "20", "--junk", "60", "--seconds", "3",
                         "--work", str(tmp_path)])
    out = capsys.readouterr().out
    for start in ("Normal client: ", "Slow connections: 20 of 20 opened", "Junk requests: 60 of 60",
                  "5xx answers: ", "Gateway: open fds ", "Request log: ", "Method: "):
        assert start in out, out
    assert out.count("target: ") == 3
    assert status == (1 if "MISSED" in out else 0)


def test_every_junk_kind_is_built_and_the_same_each_time() -> None:
    kinds = [bench.junk_body(index, seed=1)[0] for index in range(len(bench.JUNK))]
    assert kinds == list(bench.JUNK)
    for index in range(3 * len(bench.JUNK)):
        kind, body = bench.junk_body(index, seed=1)
        assert isinstance(body, bytes) and bench.junk_body(index, seed=1) == (kind, body)
    assert len(bench.junk_body(kinds.index("model-100kb"), seed=1)[1]) > 100_000


def test_the_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = bench.raise_fd_limit()
    assert soft == hard
