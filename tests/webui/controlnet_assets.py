"""Random-weight models for the ControlNet test (tier 2), built in the WebUI's Python:

  python controlnet_assets.py OUT_DIR

* `cn-sd15.safetensors` + `cn-sd15.yaml`: an SD1 checkpoint whose UNet has SD1.5's channel layout
  (320 channels, multipliers 1-2-4-4, 2 res blocks, 8 heads), because sd-webui-controlnet builds
  every SD1 control model with that layout; text encoder and VAE are the tier's tiny ones.
* `control_cn-sd15_random.safetensors`: a ControlNet for it in the original layout (the UNet's
  encoder, `input_hint_block`, `zero_convs`, `middle_block_out`), every weight random and non-zero
  so that the control changes the image.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

CHECKPOINT = "cn-sd15"
CONTROL_MODEL = "control_cn-sd15_random"
ASSETS_VERSION = "1"
SD15_UNET = {
    "model_channels": 320,
    "channel_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attention_resolutions": [4, 2, 1],
    "num_heads": 8,
    "context_dim": harness.TINY_CLIP_TEXT["hidden_size"],
}
# The hint encoder: (in, out, stride) of each 3×3 conv, at indices 0, 2, …, 14 of the Sequential.
HINT_CONVS = [(3, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 96, 2), (96, 96, 1), (96, 256, 2), (256, 320, 1)]
ENCODER_PREFIXES = ("time_embed.", "input_blocks.", "middle_block.")


def encoder_channels() -> list[int]:
    """Output channels of the UNet's 12 input blocks (what each zero conv sees)."""
    channels = [SD15_UNET["model_channels"]]
    for level, mult in enumerate(SD15_UNET["channel_mult"]):
        channels += [SD15_UNET["model_channels"] * mult] * SD15_UNET["num_res_blocks"]
        if level < len(SD15_UNET["channel_mult"]) - 1:
            channels.append(channels[-1])  # the downsample keeps the width
    return channels


def random_conv(generator, out_ch: int, in_ch: int, kernel: int, gain: float = 1.0) -> tuple:
    import torch

    weight = gain * torch.randn((out_ch, in_ch, kernel, kernel), generator=generator) / math.sqrt(in_ch * kernel**2)
    return weight, 0.05 * torch.randn(out_ch, generator=generator)


def control_state_dict(unet_state: dict, seed: int) -> dict:
    """The control model: the UNet's encoder (re-randomised copy) plus its own layers, random."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in unet_state.items():
        if key.startswith(ENCODER_PREFIXES):
            noise = torch.randn(tensor.shape, generator=generator)
            state[key] = tensor + 0.1 * tensor.std().nan_to_num(0.0) * noise
    for index, (in_ch, out_ch, _stride) in enumerate(HINT_CONVS):
        state[f"input_hint_block.{2 * index}.weight"], state[f"input_hint_block.{2 * index}.bias"] = random_conv(
            generator, out_ch, in_ch, 3
        )
    for index, channels in enumerate(encoder_channels()):
        state[f"zero_convs.{index}.0.weight"], state[f"zero_convs.{index}.0.bias"] = random_conv(
            generator, channels, channels, 1, gain=0.3
        )
    state["middle_block_out.0.weight"], state["middle_block_out.0.bias"] = random_conv(generator, 1280, 1280, 1, 0.3)
    return {key: value.contiguous() for key, value in state.items()}


def build(out: Path) -> None:
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = harness.write_tiny_checkpoint(
        out, name=CHECKPOINT, unet=SD15_UNET, half=True, description="ControlNet test model"
    )
    prefix = "model.diffusion_model."
    unet = {k[len(prefix) :]: v.float() for k, v in load_file(str(checkpoint)).items() if k.startswith(prefix)}
    control = {k: v.half() for k, v in control_state_dict(unet, harness.SEED + 7).items()}
    save_file(control, str(out / f"{CONTROL_MODEL}.safetensors"), metadata={"speedkit": "random ControlNet"})
    (out / "ASSETS_VERSION").write_text(ASSETS_VERSION + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve())
