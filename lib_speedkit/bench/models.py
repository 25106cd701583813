"""Random-weight ldm UNets for the standalone bench, the GPU benchmarks and the tests.

ldm zero-initialises `proj_out`, the ResBlocks' last convs and the output conv: with those at
zero, attention cannot change the UNet's output and any equivalence check passes vacuously.
`rerandomise` gives every parameter a random value at a scale that keeps activations O(1).
Weights are random: speed is real, images are not.
"""

from __future__ import annotations

import math

import torch

from ..errors import SpeedkitError

SD15_UNET = {
    "model_channels": 320,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4, 4],
    "num_heads": 8,
    "context_dim": 768,
}
TINY_UNET = {
    "model_channels": 32,
    "attention_resolutions": [1, 2],
    "num_res_blocks": 1,
    "channel_mult": [1, 2],
    "num_heads": 4,
    "context_dim": 64,
}
PIP_NAMES = {"PIL": "pillow", "ldm": "stable-diffusion-sdkit (pip install --no-deps stable-diffusion-sdkit)"}


def rerandomise(module: torch.nn.Module, seed: int = 1234) -> None:
    """Give every parameter random values (no zero-initialised layer left), activations O(1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.dim() >= 2:
                values = torch.randn(param.shape, generator=generator) / math.sqrt(param[0].numel())
            elif name.endswith("weight"):  # norm scales
                values = 1.0 + 0.1 * torch.randn(param.shape, generator=generator)
            else:
                values = 0.05 * torch.randn(param.shape, generator=generator)
            param.copy_(values)


def unet_class():
    """ldm's UNetModel, or SpeedkitError naming the package that is missing (ldm, or one ldm needs)."""
    try:
        from ldm.modules.diffusionmodules.openaimodel import UNetModel
    except ModuleNotFoundError as error:
        top = (error.name or "ldm").split(".")[0]
        needed = PIP_NAMES.get(top, f"{top} (pip install {top})")
        raise SpeedkitError(f"the standalone bench needs {needed}") from None
    return UNetModel


def build_unet(config: dict, seed: int = 1234, image_size: int = 32) -> torch.nn.Module:
    """An ldm UNet with `config` (SD15_UNET, TINY_UNET, ...), every parameter re-randomised."""
    unet = unet_class()(
        image_size=image_size,
        in_channels=4,
        out_channels=4,
        use_spatial_transformer=True,
        transformer_depth=1,
        use_checkpoint=False,
        legacy=False,
        **config,
    )
    rerandomise(unet, seed)
    return unet.eval()
