"""Tiny checkpoints with the real key layouts of SD1, SD2 and SDXL (and their variants), on CPU.

Each part is a real module at toy width whose `state_dict()` gives the real key names:

* UNet: ldm's `UNetModel` (configs/stable-diffusion/v1-inference.yaml, v2-inference.yaml shapes:
  spatial transformers, SD2/SDXL with `use_linear_in_transformer`); SDXL adds sgm's ADM embedding
  `label_emb.0.{0,2}` (sgm/modules/diffusionmodules/openaimodel.py, `num_classes="sequential"`),
  which the installed ldm UNet does not have, as the same nn.Sequential nesting.
* VAE: ldm's `Encoder`/`Decoder` plus `quant_conv`/`post_quant_conv` (AutoencoderKL's layout).
* Text encoders without transformers/open_clip installed: `ClipTextLayout` mirrors transformers'
  CLIPTextModel (`text_model.embeddings.token_embedding`, `.encoder.layers.N.self_attn.q_proj`, ...,
  with the persistent `position_ids` buffer older transformers saved); `OpenClipTextLayout` mirrors
  open_clip's text tower (`transformer.resblocks.N.attn.in_proj_weight` from nn.MultiheadAttention,
  `mlp.c_fc`, `ln_final`, `text_projection`, ...).
* The noise-schedule buffers of ldm's `DDPM.register_schedule` (top-level keys) and, for training
  checkpoints, LitEma's `model_ema.*` (parameter names with the dots removed, plus decay/num_updates).

Widths are tiny but the detection-relevant shapes are real: input conv channels 4/9/8, and the text
encoder widths the WebUI compares (SD2's OpenCLIP at 1024, the refiner's at 1280) are kept in the
keys' shapes by giving those embeddings that width only where the WebUI reads it (ln_final).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from lib_speedkit.bench.models import rerandomise

KINDS = (
    "SD1",
    "SD1 inpainting",
    "SD1 instruct-pix2pix",
    "SD2",
    "SD2 inpainting",
    "SDXL",
    "SDXL inpainting",
    "SDXL refiner",
)
TEXT_WIDTH = 32
CONTEXT_TOKENS = 77


class ClipTextLayout(nn.Module):
    """transformers' CLIPTextModel key layout at toy width."""

    def __init__(self, width: int = TEXT_WIDTH, layers: int = 2, vocab: int = 64):
        super().__init__()
        self.text_model = nn.Module()
        embeddings = nn.Module()
        embeddings.token_embedding = nn.Embedding(vocab, width)
        embeddings.position_embedding = nn.Embedding(CONTEXT_TOKENS, width)
        embeddings.register_buffer("position_ids", torch.arange(CONTEXT_TOKENS).expand((1, -1)).clone())
        self.text_model.embeddings = embeddings
        self.text_model.encoder = nn.Module()
        self.text_model.encoder.layers = nn.ModuleList(self._layer(width) for _ in range(layers))
        self.text_model.final_layer_norm = nn.LayerNorm(width)

    @staticmethod
    def _layer(width: int) -> nn.Module:
        layer = nn.Module()
        layer.self_attn = nn.Module()
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            setattr(layer.self_attn, name, nn.Linear(width, width))
        layer.layer_norm1 = nn.LayerNorm(width)
        layer.mlp = nn.Module()
        layer.mlp.fc1 = nn.Linear(width, 4 * width)
        layer.mlp.fc2 = nn.Linear(4 * width, width)
        layer.layer_norm2 = nn.LayerNorm(width)
        return layer


class OpenClipTextLayout(nn.Module):
    """open_clip's text tower key layout (as SD2's and SDXL's embedders keep it) at toy width."""

    def __init__(self, width: int = TEXT_WIDTH, layers: int = 2, vocab: int = 64, final_width: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(CONTEXT_TOKENS, width))
        self.text_projection = nn.Parameter(torch.zeros(width, width))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.token_embedding = nn.Embedding(vocab, width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(self._block(width) for _ in range(layers))
        # The WebUI reads ln_final.weight's width (1024: SD2 turbo, 1280: refiner): keep that shape real.
        self.ln_final = nn.LayerNorm(final_width or width)

    @staticmethod
    def _block(width: int) -> nn.Module:
        block = nn.Module()
        block.ln_1 = nn.LayerNorm(width)
        block.attn = nn.MultiheadAttention(width, 2)
        block.ln_2 = nn.LayerNorm(width)
        block.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width))]
            )
        )
        return block


def tiny_vae() -> nn.Module:
    """AutoencoderKL's key layout (encoder, decoder, quant_conv, post_quant_conv) at toy width."""
    from ldm.modules.diffusionmodules.model import Decoder, Encoder

    settings = dict(ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=[], in_channels=3)
    vae = nn.Module()
    vae.encoder = Encoder(**settings, resolution=32, z_channels=4, double_z=True)
    vae.decoder = Decoder(**settings, resolution=32, z_channels=4)
    vae.quant_conv = nn.Conv2d(8, 8, 1)
    vae.post_quant_conv = nn.Conv2d(4, 4, 1)
    return vae


def tiny_unet_for(family: str, in_channels: int) -> nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(
        image_size=8,
        in_channels=in_channels,
        out_channels=4,
        model_channels=32,
        attention_resolutions=[1, 2],
        num_res_blocks=1,
        channel_mult=[1, 2],
        num_head_channels=16 if family != "SD1" else -1,
        num_heads=2 if family == "SD1" else -1,
        use_spatial_transformer=True,
        use_linear_in_transformer=family != "SD1",
        transformer_depth=1,
        context_dim=TEXT_WIDTH * (2 if family == "SDXL" else 1),
        use_checkpoint=False,
        legacy=False,
    )
    if family.startswith("SDXL"):  # sgm's ADM (size/crop conditioning) embedding
        unet.label_emb = nn.Sequential(nn.Sequential(nn.Linear(48, 128), nn.SiLU(), nn.Linear(128, 128)))
    return unet


def schedule_buffers() -> dict[str, torch.Tensor]:
    """ldm DDPM.register_schedule's buffers for the SD "linear" schedule (fp32, 1000 steps)."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1.0 - betas)
    previous = np.append(1.0, alphas_cumprod[:-1])
    variance = betas * (1.0 - previous) / (1.0 - alphas_cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": np.log(np.maximum(variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(previous) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - previous) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    return {name: torch.tensor(value, dtype=torch.float32) for name, value in values.items()}


def _prefixed(prefix: str, module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    rerandomise(module, seed)
    return {prefix + key: value.detach().clone() for key, value in module.state_dict().items()}


def text_encoders(family: str) -> dict[str, torch.Tensor]:
    if family == "SD1":
        return _prefixed("cond_stage_model.transformer.", ClipTextLayout(), 11)
    if family == "SD2":
        return _prefixed("cond_stage_model.model.", OpenClipTextLayout(), 12)
    if family == "SDXL refiner":
        return _prefixed("conditioner.embedders.0.model.", OpenClipTextLayout(final_width=1280), 13)
    return _prefixed("conditioner.embedders.0.transformer.", ClipTextLayout(), 14) | _prefixed(
        "conditioner.embedders.1.model.", OpenClipTextLayout(), 15
    )


def ema_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LitEma's buffers for the UNet (ldm: `model_ema.diffusion_modelinput_blocks00weight`, ...)."""
    ema = {
        "model_ema." + key.removeprefix("model.").replace(".", ""): value + 0.001
        for key, value in state.items()
        if key.startswith("model.diffusion_model.")
    }
    return ema | {
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(1000, dtype=torch.int32),
    }


def tiny_state_dict(kind: str = "SD1", ema: bool = False, seed: int = 1) -> dict[str, torch.Tensor]:
    """A complete fp32 state dict of `kind` (one of KINDS), as a training or release checkpoint."""
    family, _, variant = kind.partition(" ")
    if kind == "SDXL refiner":
        family, variant = "SDXL refiner", ""
    in_channels = {"inpainting": 9, "instruct-pix2pix": 8}.get(variant, 4)
    state = _prefixed("model.diffusion_model.", tiny_unet_for(family, in_channels), seed)
    state |= _prefixed("first_stage_model.", tiny_vae(), seed + 1)
    state |= text_encoders(family)
    if not family.startswith("SDXL"):
        state |= schedule_buffers()
    return state | (ema_copy(state) if ema else {})


def vae_state_dict(seed: int = 5) -> dict[str, torch.Tensor]:
    """A standalone VAE file's keys (bare encoder.*/decoder.*/...), as vae-ft-mse releases have them."""
    vae = tiny_vae()
    rerandomise(vae, seed)
    return {key: value.detach().clone() for key, value in vae.state_dict().items()}
