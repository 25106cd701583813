"""The negative-guidance cutoff inside the WebUI's CFG denoiser.

  sigma          the host's own NGMS: `p.s_min_uncond` for the generation, and "NGMS on all
                 steps" seen by the denoiser for each call (options.options_for_this_call).
  fraction /     decided per call on the CPU by the plan's CutoffPolicy; a skipped call runs the
  adaptive       host's "skip early CFG" path (the option seen as 1 for that call), which
                 needs no GPU sync. The host's own infotext keys from that path are taken out.

The adaptive mode's similarity history belongs to one sampling pass: a later pass (the next
image of a batch count, the hires pass) starts with the negative prompt again.
"""

from __future__ import annotations

from modules import sd_samplers_cfg_denoiser, shared

from ..guidance import CutoffPolicy, noise_prediction_similarity
from ..plan import GuidanceCutoffConfig
from ..undo import Undo
from .options import options_for_this_call

TIMESTEP_SAMPLERS = ("DDIM", "DDIM CFG++", "PLMS", "UniPC")
"""Samplers whose denoiser sees timesteps (0-999), not sigmas: a sigma cutoff means nothing there."""
HOST_SKIP_KEYS = ("NGMS", "NGMS all steps", "Skip Early CFG")


def cutoff_guard(p, cutoff: GuidanceCutoffConfig) -> str | None:
    """Why the cutoff cannot apply to this generation (None: it can)."""
    model = shared.sd_model
    if getattr(model.model, "conditioning_key", None) in ("hybrid", "concat") or getattr(
        model, "is_sdxl_inpaint", False
    ):
        return "inpainting models take an image condition the uncond skip does not shrink (A1111 #10802)"
    if getattr(model, "cond_stage_key", None) == "edit":
        return "instruct-pix2pix edit models need their image guidance pass"
    if cutoff.mode == "sigma" and getattr(p, "sampler_name", None) in TIMESTEP_SAMPLERS:
        return f"the {p.sampler_name} sampler works in timesteps, not sigmas"
    return None


def host_sigma_threshold(p, cutoff: GuidanceCutoffConfig) -> Undo:
    """The host's part of the cutoff: for sigma mode its NGMS threshold on `p` (restored after)."""
    if cutoff.mode != "sigma":
        return Undo.nothing("cutoff decided per call")
    previous = p.s_min_uncond
    p.s_min_uncond = cutoff.value

    def restore() -> None:
        p.s_min_uncond = previous

    return Undo(restore, "sigma cutoff")


class GuidancePass:
    """The CFG denoiser's view of one generation's cutoff: decides and counts each call."""

    def __init__(self, p, cutoff: GuidanceCutoffConfig | None):
        self.p = p
        self.cutoff = cutoff
        self.policy = CutoffPolicy(cutoff) if cutoff is not None else None
        self.similarities: list[float] = []
        self.rows = 0  # UNet batch rows seen (a forward pre-hook counts them)
        self.rows_before_call = 0
        self.current: tuple | None = None  # (x, sigma) of the call in progress
        self.with_uncond = 0
        self.without_uncond = 0

    def new_pass(self) -> None:
        """A sampling pass starts: the similarity history is that of this pass only."""
        self.similarities = []

    def count_rows(self, _module, args) -> None:
        self.rows += args[0].shape[0]

    def denoise(self, original, denoiser, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        self.rows_before_call = self.rows
        self.current = (x, sigma)
        if self.cutoff is not None and self.cutoff.mode == "sigma":
            with options_for_this_call(sd_samplers_cfg_denoiser, s_min_uncond_all=True):
                result = original(denoiser, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        elif self.policy is not None and not self.policy.run_uncond(
            denoiser.step, denoiser.total_steps, float("nan"), self.similarities
        ):
            result = self._without_uncond(original, denoiser, x, sigma, uncond, cond, cond_scale, image_cond)
        else:
            result = original(denoiser, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        if self.rows - self.rows_before_call > x.shape[0]:
            self.with_uncond += 1
        else:
            self.without_uncond += 1
        return result

    def _without_uncond(self, original, denoiser, x, sigma, uncond, cond, cond_scale, image_cond):
        """The host's "skip early CFG" path, decided on the CPU (its NGMS test would compare a GPU
        sigma and wait for the GPU every step). Leaves no host infotext behind."""
        params = self.p.extra_generation_params
        saved = {key: params[key] for key in HOST_SKIP_KEYS if key in params}
        try:
            with options_for_this_call(sd_samplers_cfg_denoiser, skip_early_cond=1.0):
                return original(denoiser, x, sigma, uncond, cond, cond_scale, 0.0, image_cond)
        finally:
            for key in HOST_SKIP_KEYS:
                params.pop(key, None)
            params.update(saved)

    def record_similarity(self, x_out) -> None:
        """on_cfg_denoised: remember the cond/uncond similarity (adaptive mode, plain prompts)."""
        if self.policy is None or not self.policy.needs_similarity or self.current is None:
            return
        x, sigma = self.current
        batch = x.shape[0]
        uncond_ran = self.rows - self.rows_before_call > batch
        if uncond_ran and x_out.shape[0] == 2 * batch:
            self.similarities.append(noise_prediction_similarity(x, sigma, x_out[:batch], x_out[batch:]))

    def counts(self) -> dict:
        return {"with_uncond": self.with_uncond, "without_uncond": self.without_uncond}
