"""Apply a SpeedPlan: the one engine the library and the WebUI share.

A plan's features are applied in a fixed order by *appliers*, one callable per feature that
patches and returns an Undo. The library brings its own (`library_appliers`: the UNet patched
directly); the WebUI passes its host appliers (attention switched through the host, the cutoff
through its CFG denoiser, the lean step around its Lora built-in, graphs keyed on its state).
Whatever the appliers, the engine owns the order, the undo and the rollback:

  * generation features (`channels_last`, `attention`, `tome`, `cutoff`) are applied once, by
    `apply_plan`; pass features (`cuda_graph`, `compile`, `lean_step`, `deepcache`) for one sampling pass at
    a time, by `AppliedPlan.begin_pass` / `end_pass` (whether they can run depends on that pass:
    its LoRAs, its shape, hires or not), and taken off in reverse order (DeepCache rides on the
    graph's forward);
  * an applier that cannot apply its feature *here* raises FeatureSkipped(reason): the feature is
    left out, the reason is kept in `AppliedPlan.skipped`, and the rest of the plan applies;
  * any other error undoes everything applied so far, then propagates: a failed apply leaves
    the UNet exactly as it was;
  * the AppliedPlan is the undo of everything (idempotent, a context manager).

With `exclusive=True` (the default) applying a plan to a UNet that already carries one first
undoes the old one: plans never stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from .attention import active_backend, apply_attention
from .compiled import Compiler, apply_compiled, compile_support
from .cuda_graph import GraphCache, apply_cuda_graph, graph_support, instance_forwards, module_fingerprint
from .deepcache import StepClock, apply_deepcache
from .errors import FeatureSkipped, code_name
from .guidance import CutoffPolicy
from .memory_format import apply_channels_last
from .plan import SpeedPlan
from .tome import apply_tome, tome_settings_key
from .undo import SLOTS, Undo, UndoStack

GENERATION_FEATURES = ("channels_last", "attention", "tome", "cutoff")
PASS_FEATURES = ("cuda_graph", "compile", "lean_step", "deepcache")
FEATURES = GENERATION_FEATURES + PASS_FEATURES

Applier = Callable[[torch.nn.Module, SpeedPlan], Undo]
"""(unet, plan) -> the undo of one feature; FeatureSkipped(reason) when it cannot apply here."""


def feature_enabled(plan: SpeedPlan, feature: str) -> bool:
    return bool(getattr(plan, feature).enabled)


class AppliedPlan(Undo):
    """A plan applied to a UNet: the undo of all of it, what was left out and why, and the
    guidance cutoff's policy for the sampler."""

    __slots__ = ("applied", "appliers", "plan", "skipped", "stack", "unet")

    def __init__(self, unet: torch.nn.Module, plan: SpeedPlan, appliers: Mapping[str, Applier], exclusive: bool):
        self.unet = unet
        self.plan = plan
        self.appliers = appliers
        self.stack = UndoStack()
        self.applied: set[str] = set()
        self.skipped: dict[str, str] = {}
        if exclusive:
            SLOTS.release(unet, "plan")
            undo = SLOTS.occupy(unet, "plan", self.stack.unwind, "plan")
        else:
            undo = Undo(self.stack.unwind, "plan")
        super().__init__(undo, f"plan {plan}")

    @property
    def policy(self) -> CutoffPolicy:
        """When the CFG denoiser may skip the uncond pass (never, when the cutoff was skipped)."""
        return CutoffPolicy(self.plan.cutoff) if "cutoff" in self.applied else CutoffPolicy()

    def apply(self, features: Iterable[str], plan: SpeedPlan | None = None) -> None:
        """Apply `features` (in engine order) as `plan` (default: the applied plan) asks."""
        plan = plan or self.plan
        wanted = set(features)
        for feature in (f for f in FEATURES if f in wanted):
            self.stack.drop(feature)
            self.applied.discard(feature)
            self.skipped.pop(feature, None)
            if not feature_enabled(plan, feature):
                continue
            try:
                self.stack.set(feature, self.appliers[feature](self.unet, plan))
            except FeatureSkipped as skip:
                self.skipped[feature] = skip.reason
                continue
            except BaseException:
                self()
                raise
            self.applied.add(feature)

    def begin_pass(self, plan: SpeedPlan | None = None) -> None:
        """Apply the pass features for the sampling pass about to run (ending the previous one);
        `plan`: this pass's settings (the hires pass's), default the applied plan."""
        self.end_pass()
        self.apply(PASS_FEATURES, plan)

    def end_pass(self) -> None:
        """Undo the pass features: nothing of a pass outlives it (decoding, nested generations)."""
        for feature in reversed(PASS_FEATURES):
            self.stack.drop(feature)
            self.applied.discard(feature)


def apply_plan(
    unet: torch.nn.Module,
    plan: SpeedPlan,
    compute_dtype: torch.dtype | None = None,
    *,
    appliers: Mapping[str, Applier] | None = None,
    features: Iterable[str] = FEATURES,
    exclusive: bool = True,
) -> AppliedPlan:
    """Apply `features` of `plan` to `unet` (default: all of them, with the library's appliers);
    returns the undo (also a context manager).

    `compute_dtype` is the dtype the UNet computes in (e.g. torch.float16 under autocast); the
    library's attention applier checks the backend against it.
    """
    applied = AppliedPlan(unet, plan, appliers or library_appliers(compute_dtype), exclusive)
    applied.apply(features)
    return applied


# --------------------------------------------------------------------------- the library's appliers


def library_graph_key(unet: torch.nn.Module) -> tuple:
    """What a graph of `unet` depends on beyond its call arguments, as the library patches it."""
    return (module_fingerprint(unet), tome_settings_key(unet), active_backend(unet))


def replaced_forwards_reason(unet: torch.nn.Module, allowed: Callable[[str, object], bool] | None = None) -> str | None:
    """Why forwards replaced on module instances keep the graph off (None: there are none, or
    `allowed(name, forward)` vouches for each: a host that keys its graphs on their state). The
    reason names the module and the code that replaced its forward, so a user can tell which
    extension it is (ControlNet replaces the UNet's own forward)."""
    found = {
        name: forward for name, forward in instance_forwards(unet).items() if not (allowed and allowed(name, forward))
    }
    if not found:
        return None
    if "" in found:
        return (
            f"another extension replaced the UNet's forward ({code_name(found[''])}); the graph steps aside "
            "while that code drives the UNet"
        )
    name, forward = next(iter(found.items()))
    return (
        f"{len(found)} UNet module(s) have their forward replaced on the instance (e.g. {name} by "
        f"{code_name(forward)}): a graph would freeze the Python state that code reads"
    )


def library_appliers(
    compute_dtype: torch.dtype | None = None,
    graphs: GraphCache | None = None,
    clock: StepClock | None = None,
    compiler: Compiler | None = None,
) -> dict[str, Applier]:
    """Appliers that patch an ldm/sgm UNet directly (no host). `graphs`: the cache CUDA graphs
    go to (default: a new one for this plan); `clock`: DeepCache's step of each UNet call
    (default: every call is a step); `compiler`: what compiles the UNet (default: inductor, where
    it can run)."""

    def cuda_graph(unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        cache = graphs if graphs is not None else GraphCache()
        reason = graph_support(cache.capturer.device_type) or replaced_forwards_reason(unet)
        if reason is not None:
            raise FeatureSkipped(reason)
        return apply_cuda_graph(unet, cache, library_graph_key(unet))

    def lean_step(_unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        raise FeatureSkipped("the lean step bypasses the WebUI's Lora built-in, which only the WebUI has")

    chosen_compiler = compiler if compiler is not None else Compiler()  # kept across passes: compiled once

    def compile_unet(unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        reason = compile_support() if compiler is None else None  # a caller's own compiler is its call
        if reason is not None:
            raise FeatureSkipped(f"compiled UNet not used for this pass: {reason}")
        return apply_compiled(unet, chosen_compiler)

    return {
        "channels_last": lambda unet, plan: apply_channels_last(unet, True),
        "attention": lambda unet, plan: apply_attention(unet, plan.attention.backend, compute_dtype),
        "tome": lambda unet, plan: apply_tome(unet, plan.tome),
        "cutoff": lambda unet, plan: Undo.nothing("cutoff: a policy the CFG denoiser reads"),
        "cuda_graph": cuda_graph,
        "compile": compile_unet,
        "lean_step": lean_step,
        "deepcache": lambda unet, plan: apply_deepcache(unet, plan.deepcache, clock),
    }
