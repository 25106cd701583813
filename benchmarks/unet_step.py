"""UNet-level benchmark on a GPU: one process, one table, JSON to a file.

  python benchmarks/unet_step.py [--out unet_step.json] [--models sd15,sdxl] [--repeats 30]
         [--compiled] [--only LABELS] [--vae]

For an SD1.5-size ldm UNet (stable-diffusion-sdkit) and an SDXL-size UNet (`sgm`, from
Stability-AI/generative-models on PYTHONPATH; skipped with the reason when absent), with random
re-randomised fp16 weights under autocast like the WebUI, it times one UNet call per
configuration: attention backend, channels-last, ToMe ratio, batch 1 (uncond skipped) and 2
(cond + uncond), eager vs the CUDA-graph fast path. Timing: CUDA events around each call, median
of `--repeats` calls after warm-up, plus host wall time per call; FLOPs per call counted once
with torch's FlopCounterMode; achieved TFLOP/s = FLOPs / median GPU time. Numerics: the graph's
output is compared with eager's for the same inputs (max |difference|).

--compiled adds a "compiled + graph" row to each configuration: the UNet's forward through
torch.compile (inductor, `dynamic=False`, as `compile_unet` runs it) captured in the CUDA graph,
with its cold compile seconds and its max |difference| from eager. --only keeps the
configurations whose label contains one of the comma-separated parts. --vae adds the VAE decoder
(SD's AutoencoderKL decoder, fp16 without autocast as the WebUI decodes) at 512² and 1024²
(--vae-sizes), contiguous and channels-last (--vae-layouts): eager, CUDA graph, compiled + graph
(--vae-no-graphs leaves those out) and, with --compiled, compiled without a graph as the WebUI's
compiled UNet runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_speedkit.apply import apply_plan
from lib_speedkit.bench.models import SD15_UNET, build_unet, rerandomise
from lib_speedkit.compiled import Compiler, apply_compiled
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph
from lib_speedkit.plan import AttentionConfig, ChannelsLastConfig, SpeedPlan, TokenMergingConfig

SDXL_UNET = {  # sd_xl_base.yaml's network_config
    "adm_in_channels": 2816,
    "num_classes": "sequential",
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "attention_resolutions": [4, 2],
    "num_res_blocks": 2,
    "channel_mult": [1, 2, 4],
    "num_head_channels": 64,
    "use_linear_in_transformer": True,
    "transformer_depth": [0, 2, 10],
    "context_dim": 2048,
    "spatial_transformer_attn_type": "softmax-xformers",
    "use_spatial_transformer": True,
    "legacy": False,
}


def device_timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
    """Sinusoidal timestep embedding built on the timesteps' device, in fp16 like the WebUI's UNet
    (A1111 replaces ldm's version, which builds its frequencies on the CPU and copies them over:
    a host-to-device copy that cannot be captured in a CUDA graph)."""
    if repeat_only:
        return timesteps[:, None].expand(-1, dim).to(torch.float16)
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(max_period) / half)
    angles = timesteps[:, None].float() * torch.exp(exponent)[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding.to(torch.float16)


def use_device_timestep_embedding() -> None:
    import importlib

    for name in ("ldm.modules.diffusionmodules.openaimodel", "sgm.modules.diffusionmodules.openaimodel"):
        try:
            importlib.import_module(name).timestep_embedding = device_timestep_embedding
        except ImportError:
            pass


def build_sdxl_unet() -> torch.nn.Module:
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**SDXL_UNET)
    rerandomise(unet)
    return unet.eval()


def unet_inputs(kind: str, batch: int, size: int, device: str) -> tuple[tuple, dict]:
    generator = torch.Generator(device="cpu").manual_seed(7)
    latent = size // 8
    x = torch.randn(batch, 4, latent, latent, generator=generator).to(device, torch.float16)
    t = torch.linspace(900, 100, batch).to(device)
    if kind == "sdxl":
        context = torch.randn(batch, 77, 2048, generator=generator).to(device, torch.float16)
        y = torch.randn(batch, 2816, generator=generator).to(device, torch.float16)
        return (x, t), {"context": context, "y": y}
    context = torch.randn(batch, 77, 768, generator=generator).to(device, torch.float16)
    return (x, t), {"context": context}


def count_flops(unet, args, kwargs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16), FlopCounterMode(display=False) as counter:
        unet(*args, **kwargs)
    return counter.get_total_flops()


def time_calls(call, repeats: int, warmup: int = 5) -> dict:
    """Median GPU ms (CUDA events) and host wall ms per call."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    gpu_ms, wall_ms = [], []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        began = time.perf_counter()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        wall_ms.append((time.perf_counter() - began) * 1000)
        gpu_ms.append(start.elapsed_time(end))
    return {
        "gpu_ms_median": statistics.median(gpu_ms),
        "gpu_ms_min": min(gpu_ms),
        "gpu_ms_max": max(gpu_ms),
        "wall_ms_median": statistics.median(wall_ms),
        "wall_ms_min": min(wall_ms),
        "wall_ms_max": max(wall_ms),
        "n": repeats,
    }


def graphed_rows(module, call, eager_out, repeats: int, compiled: bool) -> list[dict]:
    """The CUDA-graph row of `call` (which calls `module`), and with `compiled` the compiled +
    graph row: its cold compile (and capture) seconds; each with its max |difference| from eager."""
    rows = []
    for mode in ("cuda graph", "compiled + graph") if compiled else ("cuda graph",):
        cache = GraphCache()
        with apply_cuda_graph(module, cache, "bench"):
            if mode == "compiled + graph":
                apply_compiled(module, Compiler())
            torch.cuda.synchronize()
            started = time.perf_counter()
            output = call().float()
            torch.cuda.synchronize()
            first_call = time.perf_counter() - started
            row = {"mode": mode, **time_calls(call, repeats)}
            row.update(
                graph_max_abs_diff=(output - eager_out).abs().max().item(),
                graph_eager_calls=dict(cache.stats.eager_calls),
                first_call_s=round(first_call, 2),
            )
            rows.append(row)
        cache.release()
    return rows


def run_config(
    unet, kind: str, label: str, plan: SpeedPlan, batch: int, size: int, repeats: int, compiled: bool = False
) -> list[dict]:
    """Eager, graph (and compiled + graph) rows for one configuration (the plan applied, then undone)."""
    args, kwargs = unet_inputs(kind, batch, size, "cuda")
    with apply_plan(unet, plan, torch.float16), torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        flops = count_flops(unet, args, kwargs)
        eager_out = unet(*args, **kwargs).float()
        rows = [{"mode": "eager", **time_calls(lambda: unet(*args, **kwargs), repeats), "graph_max_abs_diff": None}]
        rows += graphed_rows(unet, lambda: unet(*args, **kwargs), eager_out, repeats, compiled)
    for row in rows:
        row.update(
            model=kind,
            config=label,
            batch=batch,
            size=size,
            gflop=flops / 1e9,
            tflops=flops / (row["gpu_ms_median"] / 1000) / 1e12,
            output_abs_max=eager_out.abs().max().item(),
        )
    return rows


VAE_DECODER = {  # v1-inference.yaml's first_stage_config ddconfig (SD1.x, SD2.x and SDXL share it)
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def compiled_module_row(decoder, z, eager_out, repeats: int) -> dict:
    """The decoder as `compile_unet` runs it in the WebUI (compiled.apply_compiled_module: compiled,
    no CUDA graph), its first call (the compile) timed apart."""
    from lib_speedkit.compiled_module import apply_compiled_module, remove_compiled_module

    wrapper = apply_compiled_module(decoder, Compiler(), "vae decoder")
    try:
        torch.cuda.synchronize()
        started = time.perf_counter()
        output = decoder(z).float()
        torch.cuda.synchronize()
        first_call = time.perf_counter() - started
        row = {"mode": "compiled (no graph)", **time_calls(lambda: decoder(z), repeats)}
        row.update(graph_max_abs_diff=(output - eager_out).abs().max().item(), first_call_s=round(first_call, 2))
        row["graph_eager_calls"] = dict(wrapper.eager_calls)
    finally:
        remove_compiled_module(wrapper)
    return row


def vae_rows(size: int, repeats: int, compiled: bool, layouts: list[str], graphs: bool = True) -> list[dict]:
    """The VAE decoder at `size`² (one image, fp16, no autocast: the WebUI's decode), per layout:
    eager, and (`graphs`) CUDA graph (and compiled + graph); with `compiled`, compiled without a
    graph as the WebUI runs it."""
    from ldm.modules.diffusionmodules.model import Decoder

    decoder = Decoder(**VAE_DECODER)
    rerandomise(decoder)
    decoder = decoder.eval().half().cuda()
    z = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(3)).half().cuda()
    rows = []

    def decode():
        return decoder(z)

    with torch.no_grad():
        flops = count_flops(decoder, (z,), {})
        eager_out = decoder(z).float()
        largest = eager_out.abs().max().item()
        for layout in layouts:
            if layout == "channels-last":
                decoder.to(memory_format=torch.channels_last)  # in place: the same module
            mode_rows = [{"mode": "eager", **time_calls(decode, repeats), "graph_max_abs_diff": None}]
            if graphs:
                mode_rows += graphed_rows(decoder, decode, eager_out, repeats, compiled)
            if compiled:
                mode_rows.append(compiled_module_row(decoder, z, eager_out, repeats))
            for row in mode_rows:
                row.update(model="vae", config=f"decoder, {layout}", batch=1, size=size, gflop=flops / 1e9)
                row.update(tflops=flops / (row["gpu_ms_median"] / 1000) / 1e12, output_abs_max=largest)
            rows += mode_rows
    return rows


def configurations(kind: str) -> list[tuple[str, SpeedPlan, int, int]]:
    """(label, plan, batch, size)."""
    if kind == "sdxl":
        cl = SpeedPlan(channels_last=ChannelsLastConfig(True))
        tome = SpeedPlan(tome=TokenMergingConfig(ratio=0.5))
        return [
            ("sgm default (sdp)", SpeedPlan(), 2, 1024),
            ("channels-last", cl, 2, 1024),
            ("ToMe 0.5", tome, 2, 1024),
            ("sgm default (sdp)", SpeedPlan(), 1, 1024),
        ]
    rows = []
    for backend in ("v1", "sdp", "sdp-flash", "sdp-efficient", "sdp-cudnn"):
        rows.append((backend, SpeedPlan(attention=AttentionConfig(backend)), 2, 512))
    sdp = AttentionConfig("sdp")
    rows += [
        ("sdp + channels-last", SpeedPlan(sdp, channels_last=ChannelsLastConfig(True)), 2, 512),
        ("sdp (uncond skipped)", SpeedPlan(sdp), 1, 512),
        ("sdp + channels-last (uncond skipped)", SpeedPlan(sdp, channels_last=ChannelsLastConfig(True)), 1, 512),
        ("sdp + channels-last (batch 4)", SpeedPlan(sdp, channels_last=ChannelsLastConfig(True)), 8, 512),
        ("sdp + ToMe 0.3", SpeedPlan(sdp, tome=TokenMergingConfig(ratio=0.3)), 2, 512),
        ("sdp + ToMe 0.5", SpeedPlan(sdp, tome=TokenMergingConfig(ratio=0.5)), 2, 512),
        ("sdp", SpeedPlan(sdp), 2, 1024),
        ("sdp + channels-last", SpeedPlan(sdp, channels_last=ChannelsLastConfig(True)), 2, 1024),
        ("sdp + ToMe 0.5", SpeedPlan(sdp, tome=TokenMergingConfig(ratio=0.5)), 2, 1024),
        ("sdp-cudnn", SpeedPlan(attention=AttentionConfig("sdp-cudnn")), 2, 1024),
        ("sdp-flash", SpeedPlan(attention=AttentionConfig("sdp-flash")), 2, 1024),
    ]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<6}{'config':<40}{'b':>2}{'size':>6}{'mode':>18}{'GPU ms':>9}{'wall ms':>9}"
        f"{'TFLOP/s':>9}{'max|d| vs eager':>17}{'first call s':>14}"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<6}{r['config']:<40}{r['batch']:>2}{r['size']:>6}  ERROR {r['error']}")
            continue
        diff = "" if r["graph_max_abs_diff"] is None else f"{r['graph_max_abs_diff']:.3g}"
        if r.get("graph_eager_calls"):
            diff += f"  EAGER: {r['graph_eager_calls']}"
        lines.append(
            f"{r['model']:<6}{r['config']:<40}{r['batch']:>2}{r['size']:>6}{r['mode']:>18}"
            f"{r['gpu_ms_median']:>9.2f}{r['wall_ms_median']:>9.2f}{r['tflops']:>9.1f}{diff:>17}"
            f"{r.get('first_call_s', ''):>14}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="unet_step.json")
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--compiled", action="store_true", help="add compiled + graph rows")
    parser.add_argument("--only", help="configurations whose label contains one of these comma-separated parts")
    parser.add_argument("--vae", action="store_true", help="add the VAE decoder's rows")
    parser.add_argument("--vae-sizes", default="512,1024")
    parser.add_argument("--vae-layouts", default="contiguous,channels-last")
    parser.add_argument("--vae-no-graphs", action="store_true", help="leave out the decoder's graph rows")
    ns = parser.parse_args()
    if not torch.cuda.is_available():
        print("unet_step.py needs a CUDA GPU", file=sys.stderr)
        return 2
    use_device_timestep_embedding()
    rows, notes = [], []
    for kind in ns.models.split(","):
        try:
            unet = (build_sdxl_unet() if kind == "sdxl" else build_unet(SD15_UNET)).half().cuda()
        except ImportError as error:
            notes.append(f"{kind} skipped: {error}")
            continue
        for label, plan, batch, size in configurations(kind):
            if ns.only and not any(part in label for part in ns.only.split(",")):
                continue
            try:
                rows += run_config(unet, kind, label, plan, batch, size, ns.repeats, ns.compiled)
            except Exception as error:  # noqa: BLE001 - one configuration failing must not end the table
                rows.append({"model": kind, "config": label, "batch": batch, "size": size, "error": repr(error)[:200]})
            print("\n".join(table(rows[-3:]).splitlines()[1:]), flush=True)
        del unet
        torch.cuda.empty_cache()
    for size in (int(v) for v in ns.vae_sizes.split(",")) if ns.vae else ():
        try:
            rows += vae_rows(size, ns.repeats, ns.compiled, ns.vae_layouts.split(","), not ns.vae_no_graphs)
        except Exception as error:  # noqa: BLE001 - keep the table
            rows.append({"model": "vae", "config": "decoder", "batch": 1, "size": size, "error": repr(error)[:200]})
        print("\n".join(table(rows[-8:]).splitlines()[1:]), flush=True)
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rows": rows,
        "notes": notes,
    }
    Path(ns.out).write_text(json.dumps(result, indent=1, default=str))
    print(table(rows))
    for note in notes:
        print("note:", note)
    return 0 if rows and not math.isnan(sum(r.get("gpu_ms_median", 0) for r in rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
