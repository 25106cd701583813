"""sgm's UNet (SDXL) made capturable: its timestep embedding without a copy from the CPU.

sgm's `timestep_embedding` builds the sinusoid frequencies on the CPU and copies them to the
device on every call; a CUDA graph cannot capture such a copy (every SDXL capture failed). Here
the frequencies are computed on the CPU exactly as sgm does and copied to the device once, so
the embedding has the same values and a graphed call copies nothing. No `modules.*` import: the
WebUI adapter (fast_path.graphable_sgm_unet) puts it in place for graphed SDXL passes.
"""

from __future__ import annotations

import math

import torch

_FREQUENCIES: dict[tuple, torch.Tensor] = {}


def frequencies(half: int, max_period: float, device: torch.device) -> torch.Tensor:
    """sgm's frequencies for `half` channels, on `device` (computed and copied once)."""
    key = (half, max_period, device)
    if key not in _FREQUENCIES:
        on_cpu = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
        _FREQUENCIES[key] = on_cpu.to(device)
    return _FREQUENCIES[key]


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000, repeat_only: bool = False):
    """sgm.modules.diffusionmodules.util.timestep_embedding, the frequencies kept on the device."""
    if repeat_only:
        return timesteps[:, None].repeat(1, dim)
    half = dim // 2
    args = timesteps[:, None].float() * frequencies(half, max_period, timesteps.device)[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
