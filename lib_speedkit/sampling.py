"""A minimal, host-independent SD sampling loop: the SD1/SD2 discrete noise schedule, an
epsilon-prediction denoiser in k-diffusion's calling convention, and the Euler sampler.

These are reference implementations for tests and the UNet-level benchmark (the WebUI uses its
own). They follow the published formulas: the "scaled linear" beta schedule of Stable Diffusion
(beta from 0.00085 to 0.012 over 1000 timesteps), sigma = sqrt((1 - ᾱ) / ᾱ), and Karras et al.
(2022) Euler steps x ← x + (x - D(x)) / σ · (σ_next - σ).
"""

from __future__ import annotations

from itertools import pairwise

import torch

SD_BETA_START = 0.00085
SD_BETA_END = 0.012
SD_TRAIN_TIMESTEPS = 1000


def sd_training_sigmas(timesteps: int = SD_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The sigma of every training timestep of Stable Diffusion 1.x/2.x (ascending)."""
    betas = torch.linspace(SD_BETA_START**0.5, SD_BETA_END**0.5, timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def discrete_sigmas(steps: int, training_sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """`steps` sigmas spaced evenly in timestep from the last to the first, then a final 0.

    This is the default ("Automatic") schedule Euler uses on SD1.x in the WebUI.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    log_sigmas = (training_sigmas if training_sigmas is not None else sd_training_sigmas()).log()
    t = torch.linspace(len(log_sigmas) - 1, 0, steps, dtype=torch.float64)
    low, frac = t.floor().long(), t - t.floor()
    high = (low + 1).clamp(max=len(log_sigmas) - 1)
    sigmas = ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp()
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


class EpsDenoiser(torch.nn.Module):
    """Turns an epsilon-predicting UNet into a denoiser D(x, σ) (k-diffusion's convention)."""

    def __init__(self, unet: torch.nn.Module, training_sigmas: torch.Tensor | None = None):
        super().__init__()
        self.unet = unet
        sigmas = training_sigmas if training_sigmas is not None else sd_training_sigmas()
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional training timestep of each sigma (log-linear interpolation)."""
        log_sigma = sigma.log().to(self.log_sigmas.device)
        high = torch.searchsorted(self.log_sigmas, log_sigma).clamp(1, len(self.log_sigmas) - 1)
        low = high - 1
        span = self.log_sigmas[high] - self.log_sigmas[low]
        frac = ((log_sigma - self.log_sigmas[low]) / span).clamp(0, 1)
        return (low + frac).to(sigma.device)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c_in = (sigma**2 + 1) ** -0.5
        eps = self.unet(x * c_in[:, None, None, None], self.sigma_to_t(sigma), context=cond)
        return x - eps * sigma[:, None, None, None]


@torch.no_grad()
def sample_euler(model, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None) -> torch.Tensor:
    """Euler sampling from x (noise scaled by sigmas[0]) down the `sigmas` schedule."""
    extra_args = extra_args or {}
    s_in = x.new_ones(x.shape[0])
    for sigma, sigma_next in pairwise(sigmas):
        denoised = model(x, sigma * s_in, **extra_args)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x
