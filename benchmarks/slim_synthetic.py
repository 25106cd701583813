"""Peak memory of `python -m lib_speedkit slim` on a full-size SDXL checkpoint of random weights.

Builds the real SDXL base key layout at full size on the meta device (sgm's UNetModel from
generative-models' configs/inference/sd_xl_base.yaml, sgm's VAE Encoder/Decoder, and the text
encoders' layouts from tests/tiny_checkpoints.py at CLIP ViT-L and OpenCLIP bigG width), writes it
as an fp32 safetensors file with random values (streamed, so this script stays small too), then
slims it in a child process and reports that process's peak RSS and the file sizes.

  PYTHONPATH=<a1111>/repositories/generative-models python benchmarks/slim_synthetic.py /tmp/sdxl-synth
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from lib_speedkit.slim.safetensors_io import atomic_output, write_stream  # noqa: E402
from tiny_checkpoints import ClipTextLayout, OpenClipTextLayout  # noqa: E402


def sdxl_shapes(a1111: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    from sgm.modules.diffusionmodules.model import Decoder, Encoder
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    config = OmegaConf.load(a1111 / "repositories/generative-models/configs/inference/sd_xl_base.yaml")
    unet_params = dict(config.model.params.network_config.params)
    unet_params["spatial_transformer_attn_type"] = "softmax"
    vae_params = dict(config.model.params.first_stage_config.params.ddconfig)
    parts = {}
    with torch.device("meta"):
        parts["model.diffusion_model."] = UNetModel(**unet_params)
        vae = torch.nn.Module()
        vae.encoder, vae.decoder = Encoder(**vae_params), Decoder(**vae_params)
        vae.quant_conv, vae.post_quant_conv = torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(4, 4, 1)
        parts["first_stage_model."] = vae
        parts["conditioner.embedders.0.transformer."] = ClipTextLayout(768, 12, 49408)
        parts["conditioner.embedders.1.model."] = OpenClipTextLayout(1280, 32, 49408)
    shapes = {}
    for prefix, module in parts.items():
        for key, value in module.state_dict().items():
            shapes[prefix + key] = (value.dtype, tuple(value.shape))
    return shapes


def main(folder: Path, a1111: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shapes = sdxl_shapes(a1111)
    source = folder / "sdxl-synthetic.safetensors"
    items = [
        (name, torch.float32 if dtype.is_floating_point else dtype, shape) for name, (dtype, shape) in shapes.items()
    ]
    generator = torch.Generator().manual_seed(0)

    by_name = {name: (dtype, shape) for name, dtype, shape in items}

    def produce(name: str) -> torch.Tensor:
        dtype, shape = by_name[name]
        if dtype.is_floating_point:
            return torch.randn(shape, generator=generator) * 0.02
        return torch.arange(shape[-1] if shape else 1).expand(shape).to(dtype).contiguous()

    started = time.perf_counter()
    with atomic_output(source, overwrite=True) as file:
        write_stream(file, items, produce, {})
    written = time.perf_counter() - started
    params = sum(torch.Size(s).numel() for _, _, s in items)
    print(
        f"wrote {source}: {len(items)} tensors, {params / 1e9:.2f} G parameters, "
        f"{source.stat().st_size / 1e9:.2f} GB in {written:.0f} s",
        flush=True,
    )
    command = [sys.executable, "-m", "lib_speedkit", "slim", str(source), "--overwrite", "--json"]
    result = json.loads(subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    speed = result["checks"]
    print(
        json.dumps(
            {
                "architecture": result["architecture"],
                "size_before_gb": result["size_before"] / 1e9,
                "size_after_gb": result["size_after"] / 1e9,
                "keys": [result["keys_before"], result["keys_after"]],
                "seconds": round(result["seconds"], 1),
                "peak_rss_mb": round(result["peak_rss_mb"]),
                "largest_tensor_mb": round(result["largest_tensor_mb"]),
                "read_source": {k: speed["load_speed_source"][k] for k in ("cold", "warm", "note")},
                "read_output": {k: speed["load_speed_output"][k] for k in ("cold", "warm", "note")},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "/work/a1111"))
