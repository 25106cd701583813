"""Negative-guidance cutoff: when may the unconditional UNet pass be skipped?

`CutoffPolicy` is pure: it answers from (step, total steps, sigma, similarity history) alone.
`CutoffCFGDenoiser` is a reference classifier-free-guidance denoiser (k-diffusion calling
convention) that honours a policy and really shrinks the UNet batch on skipped steps; the WebUI
adapter applies the same policy inside the host's own CFG denoiser.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .plan import GuidanceCutoffConfig

_FRACTION_DIGITS = 9  # 0.7 * 10 is 7.000000000000001 in floats; the cutoff step must still be 7


@dataclass(frozen=True)
class CutoffPolicy:
    """Decides per model call whether the unconditional pass runs.

    `step` counts model calls from 0 and `total_steps` is their number (second-order samplers
    make two calls per sampler step; pass the call counts for them).
    """

    config: GuidanceCutoffConfig = field(default_factory=GuidanceCutoffConfig)

    def first_skipped_step(self, total_steps: int) -> int | None:
        """For the `fraction` mode: the first step that skips the uncond pass (None: none skips)."""
        if self.config.mode != "fraction":
            return None
        first = math.ceil(round(self.config.value * total_steps, _FRACTION_DIGITS))
        return first if first < total_steps else None

    def run_uncond(self, step: int, total_steps: int, sigma: float, similarities: Sequence[float] = ()) -> bool:
        """True if the unconditional pass must run at this step.

        `similarities` holds the cond/uncond cosine similarities of the earlier steps that ran
        both passes (only the `adaptive` mode reads it).
        """
        mode, value = self.config.mode, self.config.value
        if mode == "sigma":
            return not float(sigma) < value
        if mode == "fraction":
            first = self.first_skipped_step(total_steps)
            return first is None or step < first
        if mode == "adaptive":
            return not any(similarity >= value for similarity in similarities)
        return True

    @property
    def needs_similarity(self) -> bool:
        """True when the caller must measure cond/uncond similarity for this policy."""
        return self.config.mode == "adaptive"


def noise_prediction_similarity(
    x: torch.Tensor, sigma: torch.Tensor, denoised_cond: torch.Tensor, denoised_uncond: torch.Tensor
) -> float:
    """Cosine similarity of the cond and uncond noise predictions, the lowest over the batch.

    The noise prediction of a k-diffusion denoiser is (x - denoised) / sigma; the sigma factor
    cancels in the cosine, so (x - denoised) is compared directly.
    """
    eps_cond = (x - denoised_cond).flatten(1).float()
    eps_uncond = (x - denoised_uncond).flatten(1).float()
    return float(torch.nn.functional.cosine_similarity(eps_cond, eps_uncond, dim=1).min())


@dataclass
class GuidanceCounters:
    """How many model calls ran with and without the unconditional pass."""

    with_uncond: int = 0
    without_uncond: int = 0


class CutoffCFGDenoiser(torch.nn.Module):
    """Classifier-free guidance around a k-diffusion denoiser, honouring a CutoffPolicy.

    `inner_model(x, sigma, cond=...)` returns the denoised prediction. With the uncond pass the
    inner model is called once on a batch of 2B (cond rows, then uncond rows); without it, once
    on the B cond rows, and the result is the pure conditional prediction (guidance scale 1).
    Call `begin(total_steps)` before each sampling run.
    """

    def __init__(self, inner_model, policy: CutoffPolicy | None = None):
        super().__init__()
        self.inner_model = inner_model
        self.policy = policy or CutoffPolicy()
        self.begin(0)

    def begin(self, total_steps: int) -> None:
        """Reset the step counter, similarity history and counters for a new sampling run."""
        self.step = 0
        self.total_steps = total_steps
        self.similarities: list[float] = []
        self.counters = GuidanceCounters()

    def forward(self, x, sigma, cond, uncond, cond_scale: float):
        run_uncond = self.policy.run_uncond(self.step, self.total_steps, float(sigma[0]), self.similarities)
        self.step += 1
        if not run_uncond:
            self.counters.without_uncond += 1
            return self.inner_model(x, sigma, cond=cond)
        self.counters.with_uncond += 1
        denoised = self.inner_model(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond]))
        denoised_cond, denoised_uncond = denoised.chunk(2)
        if self.policy.needs_similarity:
            self.similarities.append(noise_prediction_similarity(x, sigma, denoised_cond, denoised_uncond))
        return denoised_uncond + (denoised_cond - denoised_uncond) * cond_scale
