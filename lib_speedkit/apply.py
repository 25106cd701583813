"""Apply a whole SpeedPlan to a UNet, with one undo for everything.

Order: channels-last, attention, ToMe; the undo reverses it. If applying a step fails, the steps
already applied are undone before the error propagates, so a failed apply leaves the UNet as it
was. Applying a plan to a UNet that already carries one first undoes the old one: plans never
stack, and the newest undo restores the UNet as it was before the first.

The guidance cutoff does not patch the UNet: it is a policy for the CFG denoiser (guidance.py),
handed out as `AppliedPlan.policy`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .attention import apply_attention
from .guidance import CutoffPolicy
from .memory_format import apply_channels_last
from .plan import SpeedPlan
from .tome import apply_tome
from .undo import SLOTS, Undo, run_in_reverse

Applier = Callable[[torch.nn.Module, SpeedPlan, "torch.dtype | None"], Undo]

APPLIERS: dict[str, Applier] = {
    "channels_last": lambda unet, plan, dtype: apply_channels_last(unet, plan.channels_last.enabled),
    "attention": lambda unet, plan, dtype: apply_attention(unet, plan.attention.backend, dtype),
    "tome": lambda unet, plan, dtype: apply_tome(unet, plan.tome),
}
"""Feature name -> function applying that part of a plan, in application order."""


class AppliedPlan(Undo):
    """The undo of a whole plan, plus what the sampler needs from it (the cutoff policy)."""

    __slots__ = ("plan", "policy")

    def __init__(self, undo: Undo, plan: SpeedPlan):
        super().__init__(undo, f"plan {plan}")
        self.plan = plan
        self.policy = CutoffPolicy(plan.cutoff)


def apply_plan(unet: torch.nn.Module, plan: SpeedPlan, compute_dtype: torch.dtype | None = None) -> AppliedPlan:
    """Apply every UNet-level switch of `plan`; returns the undo (also a context manager).

    `compute_dtype` is the dtype the UNet computes in (e.g. torch.float16 under autocast); the
    attention backend is checked against it.
    """
    SLOTS.release(unet, "plan")
    applied: list[Undo] = []
    try:
        for apply_feature in APPLIERS.values():
            applied.append(apply_feature(unet, plan, compute_dtype))
    except BaseException:
        run_in_reverse(applied)
        raise
    undo = SLOTS.occupy(unet, "plan", lambda: run_in_reverse(applied), "plan")
    return AppliedPlan(undo, plan)
