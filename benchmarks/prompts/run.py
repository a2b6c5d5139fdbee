"""Measure what managed prompts cost a request: µs per request in the Prompt stage.

Run ``.venv/bin/python benchmarks/prompts/run.py``. Pure in-process, stdlib only (plus
switchgear): the Prompt stage over a next stage that answers at once, driven without an event
loop (its coroutine finishes on the first step), for a chat request that names no template (what
every request pays) and for one naming a template of a system and a user message with four
variables (what rendering costs).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from switchgear.capacity.machine import commit, cpu_model, load_average
from switchgear.exchange import Exchange, Operation
from switchgear.pipeline import Reply, chain
from switchgear.pipeline.prompt import Prompt
from switchgear.sections.prompts import PromptTemplate

REPO = Path(__file__).resolve().parent.parent.parent
#: A support prompt of about 900 characters with four placeholders.
TEMPLATE = PromptTemplate.model_validate({"messages": [
    {"role": "system", "content": "You are the support assistant of {{company}} for {{product}}. "
     + "Answer briefly, politely and only about the product; say so when you do not know. " * 9
     + "Reply in {{language}}."},
    {"role": "user", "content": "Customer tier: {{tier}}."}]})
VARIABLES = {"company": "Acme", "product": "Rocket Skates", "language": "English",
             "tier": "gold"}
QUESTION = [{"role": "user", "content": "My skates arrived without wheels. What now?"}]
CASES = {
    "no template": {"model": "chat", "messages": QUESTION},
    "template": {"model": "chat", "messages": QUESTION,
                 "prompt": {"id": "support", "variables": VARIABLES}},
}


async def answer(exchange: Exchange) -> Reply:
    """The next stage: answers at once."""
    return {}


def drive(step: Coroutine[Any, Any, Reply]) -> None:
    """Run a coroutine that never waits to its end, without an event loop."""
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the stage waited for something")


def measure(body: dict[str, Any], requests: int, warmup: int) -> list[int]:
    """Nanoseconds per request through the stage (after ``warmup`` untimed ones), sorted."""
    stage = chain(Prompt({"support": TEMPLATE}, {"support": 3}), answer)
    clock = time.perf_counter_ns
    exchanges = [Exchange("bench", Operation.CHAT, dict(body), "chat")
                 for _ in range(requests + warmup)]
    for exchange in exchanges[:warmup]:
        drive(stage(exchange))
    samples = [0] * requests
    gc.collect()
    for index, exchange in enumerate(exchanges[warmup:]):
        started = clock()
        drive(stage(exchange))
        samples[index] = clock() - started
    assert exchanges[-1].prompt_version == (3 if "prompt" in body else None)
    samples.sort()
    return samples


def table(results: dict[str, list[int]]) -> str:
    """The figures as a fixed-width table."""
    lines = [f"{'request':<12} {'mean µs':>8} {'p50 µs':>8} {'p99 µs':>8}"]
    for name, samples in results.items():
        lines.append(f"{name:<12} {statistics.fmean(samples) / 1000:>8.2f} "
                     f"{samples[len(samples) // 2] / 1000:>8.2f} "
                     f"{samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000:>8.2f}")
    return "\n".join(lines)


def method(arguments: argparse.Namespace, load_before: str, seconds: float) -> str:
    """How the figures were made, as one paragraph."""
    return (
        f"Method: {platform.python_implementation()} {platform.python_version()} on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), one"
        f" process, not pinned; switchgear at commit {commit(REPO)}. Per case: {arguments.warmup:,}"
        f" untimed then {arguments.requests:,} timed requests, each a fresh Exchange of a chat"
        f" body with one user message, through Prompt(next stage that returns at once), the"
        f" coroutine driven by one send(None). The template case names a {len(TEMPLATE.messages)}"
        f"-message template of {sum(len(m.content) for m in TEMPLATE.messages)} characters with"
        f" {len(TEMPLATE.variables)} variables (rendered, checked, put before the request's"
        f" message, body rebuilt without 'prompt'). Timed with time.perf_counter_ns around each"
        f" request (the clock reads included); garbage collector on (collected before each case)."
        f" Load average (1/5/15 min) before: {load_before}; after: {load_average()}. Run time"
        f" {seconds:.0f} s."
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table and method."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default, text in (("--requests", 200_000, "timed requests per case"),
                                ("--warmup", 20_000, "untimed requests before them")):
        parser.add_argument(flag, type=int, default=default, help=f"{text} (default {default:,})")
    arguments = parser.parse_args(argv)
    if arguments.requests < 1 or arguments.warmup < 0:
        parser.error("requests >= 1, warmup >= 0")
    load_before = load_average()
    started = time.monotonic()
    results = {}
    for name, body in CASES.items():
        results[name] = measure(body, arguments.requests, arguments.warmup)
        print(f"  measured {name}", file=sys.stderr, flush=True)
    print(table(results))
    print()
    print(method(arguments, load_before, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
