"""Is the planner right, replayed on stored measurements: no server, seconds instead of an hour.

A stored profile (``data/``: closed-loop levels and many Poisson levels benched on one machine)
is split: the closed-loop levels and the Poisson levels at ``--calibrate`` rates build and
calibrate the model, as `switchgear plan` does; every other Poisson level is predicted and
printed against its measured p95, with the measurement's standard error (batch means, as
run.py prints it) and the error counted in standard errors. A model change can be judged here
against every stored level before the live benchmark (run.py) confirms it.

data/engine-2026-11-27.json.gz: the embedded engine through `switchgear serve` (16 prompt and 8
output tokens, streamed, ignore_eos), 2-core Intel Xeon with AVX-512: closed-loop levels 1, 2,
4, 8 (60 s) and thirteen Poisson levels from 1.54 to 3.16 req/s (240-600 s each; three repeat
rates of the others for 600 s with another arrival seed), commit 8bcb3ad.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))

from run import Measured  # noqa: E402

from switchgear.capacity.plan.calibration import calibrate  # noqa: E402
from switchgear.capacity.plan.profile import CLOSED_LOOP, parse_profile  # noqa: E402
from switchgear.reports.tables import table  # noqa: E402

DEFAULT_PROFILE = HERE / "data" / "engine-2026-11-27.json.gz"
RATE_MATCH = 1e-3


def load(path: Path) -> dict[str, Any]:
    """A bench profile document, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as file:
        document: dict[str, Any] = json.load(file)
    return document


def replay(document: dict[str, Any], calibrate_at: Sequence[float], slots: int) -> list[tuple[str, ...]]:
    """Rows of rate, measured p95, its standard error, predicted p95, error and error in
    standard errors for every open-loop level not calibrated on."""
    def calibrates(level: dict[str, Any]) -> bool:
        return any(abs(level["rate"] - rate) <= RATE_MATCH * rate for rate in calibrate_at)

    closed = [lv for lv in document["levels"] if lv["mode"] == CLOSED_LOOP]
    opened = sorted((lv for lv in document["levels"] if lv["mode"] != CLOSED_LOOP), key=lambda lv: lv["rate"])
    used = [lv for lv in opened if calibrates(lv)]
    model = calibrate(parse_profile({**document, "levels": closed + used}), slots).model
    scales = ", ".join(f"{scale:.3f} at {rate:.3f}" for rate, scale in model.time_scales) or "none"
    rows = [("rate (req/s)", "measured p95 (s)", "SE", "predicted p95 (s)", "error", "error / SE")]
    for level in (lv for lv in opened if not calibrates(lv)):
        measured = Measured.of(level)
        predicted = model.percentile(level["rate"], 0.95)
        error = predicted / measured.value - 1
        rows.append((f"{level['rate']:.3f}", f"{measured.value:.3f}",
                     "-" if measured.noise is None else f"±{measured.noise:.1%}",
                     f"{predicted:.3f}", f"{error:+.1%}",
                     "-" if not measured.noise else f"{error / measured.noise:+.1f}"))
    print(f"model: {len(closed)} closed-loop levels, time scale {scales} req/s; saturation "
          f"{model.saturation:.3f} req/s")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", nargs="?", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--calibrate", default="1.766,2.8257",
                        help="Rates (req/s) of the stored Poisson levels to calibrate on, comma-separated.")
    parser.add_argument("--slots", type=int, default=8)
    arguments = parser.parse_args(argv)
    rates = [float(rate) for rate in arguments.calibrate.split(",") if rate.strip()]
    for line in table(replay(load(arguments.profile), rates, arguments.slots)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
