"""What limits scaling first: each resource as a ceiling on the request rate, with evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass

from switchgear.capacity.plan.model import QueueModel

TEXT_BYTES_PER_TOKEN = 4
SSE_BYTES_PER_TOKEN = 200
ENVELOPE_BYTES = 600


@dataclass(frozen=True)
class Workload:
    """Per-request sizes the resource ceilings depend on (means from the profile)."""

    input_tokens: float
    output_tokens: float
    stream: bool
    bytes_per_request: float | None = None

    @property
    def tokens(self) -> float:
        """Input plus output tokens of one request."""
        return self.input_tokens + self.output_tokens

    def wire_bytes(self) -> tuple[float, bool]:
        """Bytes on the wire per request (both ways), and whether that is an estimate."""
        if self.bytes_per_request is not None:
            return self.bytes_per_request, False
        output = SSE_BYTES_PER_TOKEN if self.stream else TEXT_BYTES_PER_TOKEN
        return (ENVELOPE_BYTES + TEXT_BYTES_PER_TOKEN * self.input_tokens
                + output * self.output_tokens), True


@dataclass(frozen=True)
class Resources:
    """Facts about the deployment the operator knows; None where not given."""

    memory_per_instance_gb: float | None = None
    kv_mb_per_1k_tokens: float | None = None
    network_gbps: float | None = None
    upstream_rpm: float | None = None
    upstream_tpm: float | None = None


@dataclass(frozen=True)
class Limit:
    """One resource's ceiling on the total request rate, at the planned number of instances."""

    name: str
    max_rate: float
    scales_with_instances: bool
    evidence: str

    def headroom(self, demand: float) -> float:
        """How many times ``demand`` (requests/s) fits under this ceiling."""
        return self.max_rate / demand if demand > 0 else float("inf")


def compute_limit(model: QueueModel, instances: int) -> Limit:
    """Slots/compute: the calibrated saturation per instance with every slot in service."""
    return Limit("slots/compute", instances * model.saturation, True,
                 f"saturation {model.saturation:.2f} req/s per instance with {model.slots} requests in "
                 f"service (closed-loop levels up to concurrency {model.n_max}{_scaled(model)}); x "
                 f"{instances} instance(s)")


def memory_limit(model: QueueModel, instances: int, workload: Workload,
                 resources: Resources) -> Limit | None:
    """Memory: how many sequences' KV cache fit per instance, and the calibrated saturation
    with at most that many in service (the compute ceiling's scale: where memory holds the
    slots or more, it is the compute ceiling, and compute is named first)."""
    if resources.memory_per_instance_gb is None or resources.kv_mb_per_1k_tokens is None:
        return None
    per_sequence_mb = resources.kv_mb_per_1k_tokens * workload.tokens / 1000
    sequences = resources.memory_per_instance_gb * 1024 / per_sequence_mb if per_sequence_mb else 1e12
    rate = model.saturation_at(sequences)
    in_service = min(math.floor(sequences), model.slots)
    return Limit("memory", instances * rate, True,
                 f"{workload.tokens:.0f} tokens per sequence x {resources.kv_mb_per_1k_tokens:g} MB "
                 f"KV per 1k tokens = {per_sequence_mb:.1f} MB; {resources.memory_per_instance_gb:g} GB "
                 f"holds {sequences:.1f} sequences: with {in_service} of the {model.slots} slots in "
                 f"service, saturation {rate:.2f} req/s per instance{_scaled(model)}; x {instances} "
                 "instance(s)")


def _scaled(model: QueueModel) -> str:
    """How the ceilings were put on the open-loop scale, for their evidence."""
    if not model.time_scales:
        return "; closed-loop throughput, not calibrated on open-loop levels"
    return "; service times scaled as the open-loop levels measured"


def network_limit(workload: Workload, resources: Resources) -> Limit | None:
    """Network: bytes per request against the link."""
    if resources.network_gbps is None:
        return None
    size, estimated = workload.wire_bytes()
    link = resources.network_gbps * 1e9 / 8
    basis = ("estimated from the token counts" + (", streamed" if workload.stream else "")
             if estimated else "given")
    return Limit("network", link / size, False,
                 f"{size:.0f} bytes per request ({basis}) on a {resources.network_gbps:g} Gbit/s "
                 "link shared by all instances")


def upstream_limits(workload: Workload, resources: Resources) -> list[Limit]:
    """An upstream provider's rate limits, in requests and in tokens per minute."""
    limits = []
    if resources.upstream_rpm is not None:
        limits.append(Limit("upstream rate limit (RPM)", resources.upstream_rpm / 60, False,
                            f"{resources.upstream_rpm:g} requests per minute"))
    if resources.upstream_tpm is not None and workload.tokens > 0:
        limits.append(Limit("upstream rate limit (TPM)",
                            resources.upstream_tpm / 60 / workload.tokens, False,
                            f"{resources.upstream_tpm:g} tokens per minute / "
                            f"{workload.tokens:.0f} tokens per request"))
    return limits


def resource_limits(model: QueueModel, instances: int, workload: Workload,
                    resources: Resources, demand: float) -> list[Limit]:
    """Every ceiling the inputs allow, the first to be hit by ``demand`` as it grows first
    (ties go to the one that adding instances lifts)."""
    candidates = [compute_limit(model, instances), memory_limit(model, instances, workload, resources),
                  network_limit(workload, resources), *upstream_limits(workload, resources)]
    limits = [limit for limit in candidates if limit is not None]
    return sorted(limits, key=lambda limit: (limit.headroom(demand), not limit.scales_with_instances))
