"""What the GPU utilisation during sampling says about a run.

Thresholds (mean NVML utilisation while sampling):
  < 50 %   host-bound: the GPU waits for Python to dispatch and launch kernels. Measured: stock
           A1111 on an H200 at 512² batch 1 ran at 35 % (measured 2026-11, random-weight SD1.5).
  50–80 %  partly host-bound.
  >= 80 %  GPU-bound: the GPU is busy; A1111 at 1024² on an H200 runs at 81 %.
NVML's utilisation is the share of time at least one kernel ran, averaged over 1/6–1 s.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST_BOUND_BELOW = 50.0
GPU_BOUND_FROM = 80.0

HOST_BOUND_HELP = (
    "a faster single-thread CPU; a larger batch size or resolution (more GPU work per step); fewer "
    "per-step Python hooks (extensions, live previews); graph capture (CUDA graphs, compiled engines)"
)


@dataclass(frozen=True)
class Diagnosis:
    verdict: str  # "host-bound" | "partly host-bound" | "GPU-bound" | "unknown"
    message: str


def diagnose(mean_gpu_utilisation: float | None, reason_unknown: str = "no GPU utilisation was measured") -> Diagnosis:
    """Diagnosis from the mean GPU utilisation (percent) during sampling."""
    if mean_gpu_utilisation is None:
        return Diagnosis("unknown", f"Cannot tell whether the run was CPU- or GPU-bound: {reason_unknown}.")
    util = mean_gpu_utilisation
    if util < HOST_BOUND_BELOW:
        return Diagnosis(
            "host-bound",
            f"GPU busy only {util:.0f} % of the sampling time: the run is CPU/launch-bound, the GPU waits for the "
            f"host. What helps: {HOST_BOUND_HELP}. GPU-side savings (ToMe, guidance cutoff) change little here.",
        )
    if util < GPU_BOUND_FROM:
        return Diagnosis(
            "partly host-bound",
            f"GPU busy {util:.0f} % of the sampling time: partly limited by the host. Larger batches or "
            "resolutions use the GPU better; GPU-side savings help only partly.",
        )
    return Diagnosis(
        "GPU-bound",
        f"GPU busy {util:.0f} % of the sampling time: the run is GPU-bound. GPU-side savings (attention "
        "backend, ToMe at high resolution, guidance cutoff) reach the wall clock here.",
    )
