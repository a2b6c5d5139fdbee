"""A model-server simulator: OpenAI-compatible, with slots, queueing, load-dependent latency and
injectable faults, for tests, load and chaos experiments (served by ``switchgear simulate``)."""

from switchgear.simulator.faults import Faults
from switchgear.simulator.model import SimulatedModel
from switchgear.simulator.options import ModelOptions
from switchgear.simulator.server import (
    RunningSimulator,
    build_simulator_app,
    serve_simulator,
    start_simulator,
)

__all__ = [
    "Faults",
    "ModelOptions",
    "RunningSimulator",
    "SimulatedModel",
    "build_simulator_app",
    "serve_simulator",
    "start_simulator",
]
