"""Tiny real ldm UNets for CPU tests.

SD1 structure at toy width: spatial transformers with self-attention and cross-attention on a
77-token context, attention at two resolutions (16x16 and 8x8 latents) so ToMe's max_downsample
matters. ldm zero-initialises `proj_out` and the output conv; with those at zero, attention
cannot change the UNet output and equivalence tests would pass vacuously. `rerandomise` (shared with the standalone
bench) gives EVERY parameter a fresh random value with a scale that keeps activations finite and O(1).
"""

from __future__ import annotations

import torch

from lib_speedkit.bench.models import TINY_UNET, build_unet

CONTEXT_TOKENS = 77
CONTEXT_DIM = TINY_UNET["context_dim"]
LATENT_SIZE = 16


def tiny_unet(seed: int = 1234) -> torch.nn.Module:
    return build_unet(TINY_UNET, seed, image_size=LATENT_SIZE)


def unet_inputs(batch: int = 2, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, timesteps, context) for one UNet call."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, LATENT_SIZE, LATENT_SIZE, generator=generator)
    timesteps = torch.linspace(900, 100, batch)
    context = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
    return x, timesteps, context


@torch.no_grad()
def unet_output(unet: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    x, timesteps, context = unet_inputs(batch)
    return unet(x, timesteps, context=context)


def prompt_pair(batch: int = 1, seed: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) text embeddings of shape (batch, 77, CONTEXT_DIM)."""
    generator = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
    uncond = torch.randn(batch, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
    return cond, uncond
