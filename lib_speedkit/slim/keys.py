"""Which keys a checkpoint has, which ones the WebUI needs, and which ones slimming drops.

Architecture detection follows AUTOMATIC1111 v1.10.1 (`modules/sd_models_config.py`,
`guess_model_config_from_state_dict`; `modules/sd_models.py`, `set_model_type`). Every key those
functions read is kept by every rule here (`DETECTION_KEYS`, checked after planning), so a slimmed
checkpoint is recognised as the same architecture.

The rules (README "Slim a checkpoint" lists them with the reasons):

* all architectures, with prune on: drop `model_ema.*` (the EMA copy of the UNet that training keeps
  beside the weights, plus its `decay`/`num_updates`; the WebUI never loads it);
* SD1 layout, with prune on: drop a text-encoder key in the old transformers layout
  (`cond_stage_model.transformer.embeddings.*`, `.encoder.*`, `.final_layer_norm.*`) when the same
  key exists under `cond_stage_model.transformer.text_model.` (the WebUI renames the old layout to
  the new one on load, `checkpoint_dict_replacements_sd1`, so one of the two is a dead duplicate);
* SDXL and the SDXL refiner, with prune on: drop `cond_stage_model.*` (the SDXL model has
  `conditioner.*` instead; the WebUI loads with `strict=False`, which ignores these keys);
* keep VAE off: drop `first_stage_model.*`; a baked VAE replaces `first_stage_model.*`;
* everything else is kept. The noise schedule (top-level keys without a dot: `betas`,
  `alphas_cumprod`, ... and sgm's `denoiser.sigmas`) keeps its dtype: the WebUI loads these buffers
  into the model and computes its sigmas from `alphas_cumprod`, so rounding them would change images.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .safetensors_io import SlimError

UNET = "model.diffusion_model."
VAE = "first_stage_model."
EMA = "model_ema."
INPUT_CONV = UNET + "input_blocks.0.0.weight"
SD1_TEXT = "cond_stage_model.transformer."
SD1_TEXT_NEW = SD1_TEXT + "text_model."
SD1_LEGACY_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")
SD2_TEXT_PROBE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SDXL_PROBE = "conditioner.embedders.1.model.ln_final.weight"
REFINER_PROBE = "conditioner.embedders.0.model.ln_final.weight"
SD3_PROBE = UNET + "x_embedder.proj.weight"
KEEP_DTYPE_KEYS = ("denoiser.sigmas",)

# Keys the WebUI reads to pick the config and the model type (sd_models_config.py, sd_models.py).
DETECTION_KEYS = (
    SD2_TEXT_PROBE,
    INPUT_CONV,
    "embedder.model.ln_final.weight",
    SD3_PROBE,
    SDXL_PROBE,
    REFINER_PROBE,
    "depth_model.model.pretrained.act_postprocess3.0.project.0.bias",
    "cond_stage_model.roberta.embeddings.word_embeddings.weight",
    "cond_stage_model.transformation.weight",
    UNET + "middle_block.1.transformer_blocks.0.attn1.to_q.weight",
)
VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


@dataclass(frozen=True)
class Architecture:
    family: str  # "SD1" | "SD2" | "SDXL" | "SDXL refiner"
    variant: str  # "" | "inpainting" | "instruct-pix2pix"

    @property
    def name(self) -> str:
        return f"{self.family} {self.variant}".strip()


def _variant(shapes: Mapping[str, tuple[int, ...]]) -> str:
    channels = shapes[INPUT_CONV][1] if len(shapes.get(INPUT_CONV, ())) > 1 else 4
    return {9: "inpainting", 8: "instruct-pix2pix"}.get(channels, "")


def detect_architecture(shapes: Mapping[str, tuple[int, ...]]) -> Architecture:
    """SD1 / SD2 / SDXL / SDXL refiner (+ inpainting variants) from key names and shapes."""
    if SD3_PROBE in shapes:
        raise SlimError("input: an SD3 checkpoint; slimming supports SD1, SD2, SDXL and the SDXL refiner")
    if not any(key.startswith(UNET) for key in shapes):
        raise SlimError(
            "input: no model.diffusion_model.* keys, so not a Stable Diffusion checkpoint in the layout "
            "the WebUI loads (a VAE, a LoRA or an embedding?)"
        )
    if SDXL_PROBE in shapes:
        return Architecture("SDXL", _variant(shapes))
    if REFINER_PROBE in shapes:
        width = shapes[REFINER_PROBE][0]
        return Architecture("SD2", _variant(shapes)) if width == 1024 else Architecture("SDXL refiner", "")
    if SD2_TEXT_PROBE in shapes:
        return Architecture("SD2", _variant(shapes))
    if any(key.startswith(SD1_TEXT) for key in shapes):
        return Architecture("SD1", _variant(shapes))
    raise SlimError("input: unknown architecture (no SD1, SD2 or SDXL text encoder keys found)")


def drop_reason(key: str, arch: Architecture, keys: Mapping[str, object], prune: bool) -> str | None:
    """Why pruning drops `key` from a checkpoint of `arch` (None: keep it). VAE rules are separate."""
    if not prune:
        return None
    if key.startswith(EMA):
        return "EMA copy (model_ema.*)"
    if arch.family == "SD1" and key.startswith(SD1_TEXT) and not key.startswith(SD1_TEXT_NEW):
        rest = key[len(SD1_TEXT) :]
        if rest.startswith(SD1_LEGACY_PARTS) and SD1_TEXT_NEW + rest in keys:
            return "old-layout text-encoder duplicate"
    if arch.family.startswith("SDXL") and key.startswith("cond_stage_model."):
        return "cond_stage_model.* (not part of an SDXL model)"
    return None


def keeps_dtype(key: str) -> bool:
    """The noise schedule keeps its precision (see the module docstring)."""
    return "." not in key or key in KEEP_DTYPE_KEYS


def vae_key(key: str) -> str | None:
    """The checkpoint key of a VAE file's key, or None for keys the WebUI skips too (`loss*`, EMA)."""
    if key.startswith("loss") or key in ("model_ema.decay", "model_ema.num_updates"):
        return None  # as modules/sd_vae.py load_vae_dict (vae_ignore_keys, k[0:4] != "loss")
    if key.startswith(VAE):
        return key
    if key.startswith(VAE_PARTS):
        return VAE + key
    raise SlimError(f"vae: unexpected key {key!r}; a VAE has encoder.*, decoder.*, quant_conv.*, post_quant_conv.*")
