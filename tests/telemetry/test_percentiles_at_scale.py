"""The latency report over two million requests, in SQLite and in PostgreSQL: its p50/p95/p99 of
e2e, TTFT and TPOT per group equal numpy's inverted-CDF percentiles (nearest-rank) of the same
values, exactly, and it counts every successful request of the window (issue 23: it used to read
only the newest million).

The rows are made by the database itself (generate_series, or a recursive CTE on SQLite) from
integer formulas that numpy repeats: the same IEEE operations in the same order give the same
doubles on both sides. Latency drifts upwards with time, so a report of the newest rows only
is off."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import urllib3
from click.testing import CliRunner

from switchgear.cli.main import main
from switchgear.config import Config
from switchgear.store import open_store
from switchgear.store.migrations import TYPE_NAMES

from servers import gateway

ROWS = 2_000_000
#: Rows per INSERT statement (each well inside the PostgreSQL store's statement timeout).
BATCH = 250_000
#: Seconds between consecutive requests: a power of two, so received times are exact.
SPACING = 2.0 ** -10
MODELS, DEPLOYMENTS = 3, 2

#: One row per request number ``i``, from integers only: ``h`` scatters i over [0, 1000003).
#: Model m0's TTFT is uniform, m1's skewed (h squared), m2's full of ties (50 values); all
#: drift up by i / 1e7 s. Generating the answer takes 0 to 6.6 s; every 97th request failed (status 500);
#: every 5th was not streamed; output tokens run 1 to 7.
VALUES = """
    SELECT i, received, received + ttft AS first_at, received + ttft + gen AS done_at
    FROM (SELECT i, {base} + CAST(i AS {double}) * {spacing} AS received,
                 CASE i % 3 WHEN 0 THEN CAST(h AS {double}) / 1e6
                            WHEN 1 THEN CAST(h * h AS {double}) / 1e13
                            ELSE CAST(h % 50 AS {double}) / 100.0 END
                 + CAST(i AS {double}) / 1e7 AS ttft,
                 CAST((i * 40503 + 7) % 65537 AS {double}) / 1e4 AS gen
          FROM (SELECT i, (i * 2654435761) % 1000003 AS h FROM {series}) AS numbered) AS timed
"""
INSERT = """
    INSERT INTO request_log (request_id, tenant, model, deployment, operation, stream,
        received_at, first_token_at, done_at, prompt_tokens, completion_tokens, status,
        truncated, attempts, cost)
    SELECT 'req-' || i, 'acme', 'm' || (i % 3), 'd' || (i % 2), 'chat', i % 5 <> 0,
           received, first_at, done_at, 10, 1 + i % 7,
           CASE WHEN i % 97 = 0 THEN 500 ELSE 200 END, 1 = 0, 1, 0.0
    FROM ({values}) AS request
"""
SERIES = {
    "postgresql": ("", "generate_series(CAST({first} AS BIGINT), {last}) AS series(i)"),
    "sqlite": ("WITH RECURSIVE series(i) AS (SELECT {first} UNION ALL "
               "SELECT i + 1 FROM series WHERE i < {last}) ", "series"),
}


async def insert_requests(url: str, base: float) -> None:
    """Make the ROWS requests, received from ``base`` on, in the store at ``url``."""
    store = open_store(url)
    await store.open()
    try:
        prefix, series = SERIES[store.dialect]
        for first in range(0, ROWS, BATCH):
            bounds = {"first": first, "last": min(first + BATCH, ROWS) - 1}
            values = VALUES.format(base=repr(base), spacing=repr(SPACING),
                                   double=TYPE_NAMES[store.dialect]["double"],
                                   series=series.format(**bounds))
            await store.execute(prefix.format(**bounds) + INSERT.format(values=values))
    finally:
        await store.close()


def expected_groups(base: float) -> dict[tuple[str, str], dict[str, npt.NDArray[np.float64]]]:
    """Per (model, deployment): the successful requests' e2e, TTFT and TPOT, made by numpy."""
    i = np.arange(ROWS, dtype=np.int64)
    h = (i * 2654435761) % 1000003
    ttft = np.select([i % 3 == 0, i % 3 == 1], [h / 1e6, (h * h) / 1e13], (h % 50) / 100.0)
    ttft = ttft + i / 1e7
    received = base + i * SPACING
    first = received + ttft
    done = received + ttft + ((i * 40503 + 7) % 65537) / 1e4
    tokens = 1 + i % 7
    succeeded = i % 97 != 0
    tpot_valid = succeeded & (i % 5 != 0) & (tokens > 1)
    groups = {}
    for model in range(MODELS):
        for deployment in range(DEPLOYMENTS):
            group = (i % 3 == model) & (i % 2 == deployment)
            rows, streams = group & succeeded, group & tpot_valid
            groups[(f"m{model}", f"d{deployment}")] = {
                "e2e_s": (done - received)[rows], "ttft_s": (first - received)[rows],
                "tpot_s": (done - first)[streams] / (tokens - 1)[streams]}
    return groups


def check_report(report: dict[str, Any], base: float) -> None:
    """Every group's counts and percentiles equal numpy's, and every request was counted."""
    expected = expected_groups(base)
    assert [(entry["model"], entry["deployment"]) for entry in report["data"]] == sorted(expected)
    for entry in report["data"]:
        measures = expected[(entry["model"], entry["deployment"])]
        for measure, values in measures.items():
            direct = np.quantile(values, [0.50, 0.95, 0.99], method="inverted_cdf")
            figures = entry[measure]
            assert (figures["p50"], figures["p95"], figures["p99"], figures["count"]) == (
                *direct, len(values)), (entry["model"], entry["deployment"], measure)
        assert entry["requests"] == len(measures["e2e_s"])
    assert report["requests"] == ROWS - len(range(0, ROWS, 97))
    assert report["method"] == "nearest-rank" and report["exact"] is True


def test_two_million_requests_give_exact_percentiles(make_config: Callable[..., Config],
                                                     store_url: str) -> None:
    base = float(int(time.time()) - 2 * 3600)
    asyncio.run(insert_requests(store_url, base))
    config = make_config(
        {"m0": {"deployments": [{"name": "d0", "backend": "simulated"}]}}, store_url=store_url)
    with gateway(config) as base_url:
        root = base_url.removesuffix("/v1")
        response = urllib3.request(
            "GET", f"{root}/admin/latency?group_by=model,deployment&window_s=10800",
            timeout=300)
        table = CliRunner().invoke(main, ["latency", "report", "--url", root, "--by", "model",
                                          "--window", "3h"])
    assert response.status == 200, response.data
    check_report(json.loads(response.data), base)
    assert table.exit_code == 0, table.output
    assert "exact nearest-rank percentiles of all 1,979,381 successful requests" in table.output
