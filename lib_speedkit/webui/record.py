"""What is known about a generation once it ran: the record the status route and the bench read,
the count of the UNet calls its graphed passes replayed or ran eagerly, and what the infotext may
claim from them (only what really ran)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class GenerationRecord:
    """What the status endpoint and the bench read about a generation (`enabled` False: Speedkit
    was off and touched nothing, so nothing was counted)."""

    enabled: bool = True
    requested: dict[str, str] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: str | None = None
    nested: bool = False
    unet_calls: dict | None = None  # with/without the uncond pass, the whole generation
    passes: list[dict] = field(default_factory=list)  # per sampling pass: calls, graph statistics
    cuda_graph: dict | None = None  # replays, captures and eager calls by reason, the whole generation
    deepcache: dict | None = None  # full and shallow UNet calls of the passes DeepCache ran, the whole generation
    vae_decoder: dict | None = None  # the compiled VAE decoder's compiled and eager calls (compile_unet)
    overhead_s: dict[str, float] = field(default_factory=dict)  # Speedkit's own work: activate, passes, finish
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def as_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class GraphCalls:
    """The UNet calls of a generation's graphed passes: replayed, or eager by reason."""

    replays: int = 0
    eager: dict[str, int] = field(default_factory=dict)

    def add(self, pass_stats: dict) -> None:
        self.replays += pass_stats["replays"]
        for reason, count in pass_stats["eager_calls"].items():
            self.eager[reason] = self.eager.get(reason, 0) + count

    @property
    def total(self) -> int:
        return self.replays + sum(self.eager.values())


def deepcache_totals(passes: list[dict]) -> dict | None:
    """Full and shallow UNet calls over the passes DeepCache ran (None: it ran in none)."""
    counted = [p["deepcache"] for p in passes if p.get("deepcache")]
    if not counted:
        return None
    return {kind: sum(c[kind] for c in counted) for kind in ("full", "shallow")}


def graph_claim(calls: GraphCalls) -> str | None:
    """`Speedkit CUDA graph`: True when every UNet call of the graphed passes replayed, how many
    when some did, None (no claim) when none did."""
    if calls.replays and not calls.eager:
        return "True"
    if calls.replays:
        return f"{calls.replays}/{calls.total} calls"
    return None


def compiled_claim(passes: list[dict]) -> bool:
    """`Speedkit compiled UNet`: every graphed pass (those with a "compiled" entry) replayed
    compiled kernels."""
    graphed = [p for p in passes if "compiled" in p]
    return bool(graphed) and all(p["compiled"] for p in graphed)


def deepcache_claim(passes: list[dict]) -> bool:
    """`Speedkit DeepCache`: some pass really ran shallow steps (not when every step ran the whole
    UNet: too few steps, or only full-step windows)."""
    return any((p.get("deepcache") or {}).get("shallow") for p in passes)
