"""DeepCache in the WebUI: the step of each UNet call, and when DeepCache must step aside.

The step is the CFG denoiser's own counter (`step`, `total_steps`: model evaluations, two per
sampler step for second-order samplers), seen when Speedkit's wrapper of its forward runs; every
UNet call of that denoiser call belongs to that step (the cond and uncond halves the WebUI runs
as separate calls when `batch_cond_uncond` is off each get their own cache).

DeepCache runs the UNet's blocks itself instead of the UNet's forward, so it steps aside (the
pass runs the UNet's own forward, with a note) when something other than A1111's forward would
run: another UNet implementation (Settings → SD Unet, e.g. TensorRT), a forward someone patched
on the UNet class, or one replaced on the instance (ControlNet; checked by the library).
"""

from __future__ import annotations

import torch
from modules import sd_hijack, sd_unet

from ..errors import code_name


class DenoiserSteps:
    """The step of the denoiser call in progress (a StepClock for DeepCache)."""

    def __init__(self) -> None:
        self.step = 0
        self.total: int | None = None

    def see(self, denoiser) -> None:
        """Speedkit's wrapper of CFGDenoiser.forward: a denoiser call starts."""
        self.step = int(getattr(denoiser, "step", 0))
        total = getattr(denoiser, "total_steps", None)
        self.total = int(total) if total else None

    def __call__(self) -> tuple[int, int | None]:
        return self.step, self.total


def webui_forwards() -> tuple:
    """The UNet class forwards A1111 installs (its SD Unet dispatch) and the originals they wrap."""
    return (
        sd_hijack.ldm_patched_forward,
        sd_hijack.sgm_patched_forward,
        sd_hijack.ldm_original_forward,
        sd_hijack.sgm_original_forward,
    )


def deepcache_blocker(unet: torch.nn.Module) -> str | None:
    """Why this pass must run the UNet's own forward (None: DeepCache may run its blocks)."""
    if sd_unet.current_unet is not None:
        return f"another UNet implementation is active ({sd_unet.current_unet_option.label})"
    forward = type(unet).forward
    if forward not in webui_forwards():
        return f"another extension patched the UNet class's forward ({code_name(forward)})"
    return None
