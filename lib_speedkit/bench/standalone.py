"""The standalone bench: no WebUI, an ldm UNet with random weights, the switch matrix at UNet level.

`python -m lib_speedkit bench --standalone` builds an SD1.5-size UNet (the `ldm` package from
stable-diffusion-sdkit) on the local GPU, or a tiny one on the CPU, runs a CFG Euler loop with each
switch, and prints per-step time, achieved TFLOP/s, GPU utilisation and VRAM. Weights are random:
speed is real, images are not. ldm zero-initialises some layers; every parameter is re-randomised
so attention really contributes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from ..apply import apply_plan, library_appliers
from ..cuda_graph import GraphCache
from ..errors import SpeedkitError
from ..guidance import CutoffCFGDenoiser
from ..plan import (
    AttentionConfig,
    ChannelsLastConfig,
    CudaGraphConfig,
    GuidanceCutoffConfig,
    SpeedPlan,
    TokenMergingConfig,
)
from ..sampling import EpsDenoiser, discrete_sigmas, sample_euler
from .models import SD15_UNET, TINY_UNET, build_unet
from .stats import summarise
from .telemetry import TelemetrySampler, open_gpu_provider


def default_plans() -> list[tuple[str, SpeedPlan]]:
    return [
        ("original attention (v1)", SpeedPlan(AttentionConfig("v1"))),
        ("sdp", SpeedPlan(AttentionConfig("sdp"))),
        ("sdp-flash", SpeedPlan(AttentionConfig("sdp-flash"))),
        ("sdp-math", SpeedPlan(AttentionConfig("sdp-math"))),
        ("sdp + channels-last", SpeedPlan(AttentionConfig("sdp"), channels_last=ChannelsLastConfig(True))),
        ("sdp + ToMe 0.5", SpeedPlan(AttentionConfig("sdp"), tome=TokenMergingConfig(ratio=0.5))),
        ("sdp + cutoff 0.75", SpeedPlan(AttentionConfig("sdp"), GuidanceCutoffConfig("fraction", 0.75))),
        ("sdp + CUDA graph", SpeedPlan(AttentionConfig("sdp"), cuda_graph=CudaGraphConfig(True))),
        (
            "fast path (sdp, graph, c-last)",
            SpeedPlan(AttentionConfig("sdp"), channels_last=ChannelsLastConfig(True), cuda_graph=CudaGraphConfig(True)),
        ),
    ]


@dataclass
class StandaloneSettings:
    size: str = "auto"  # "sd15" | "tiny" | "auto" (sd15 on a GPU, tiny on the CPU)
    steps: int = 20
    resolution: int = 512
    batch: int = 1
    runs: int = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _flops_per_unet_call(unet, x, t, context) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x, t, context=context)
    return counter.get_total_flops()


def run_standalone(settings: StandaloneSettings, progress=print) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    size = settings.size if settings.size != "auto" else ("sd15" if device.type == "cuda" else "tiny")
    config = SD15_UNET if size == "sd15" else TINY_UNET
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    latent = settings.resolution // 8 if size == "sd15" else 16
    unet = build_unet(config).to(device)
    context_dim = config["context_dim"]
    cond = torch.randn(settings.batch, 77, context_dim, device=device)
    uncond = torch.randn(settings.batch, 77, context_dim, device=device)
    autocast = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else contextlib.nullcontext()
    sigmas = discrete_sigmas(settings.steps).to(device)
    noise = torch.randn(settings.batch, 4, latent, latent, device=device) * sigmas[0]
    with autocast:
        flops_full = _flops_per_unet_call(
            unet,
            noise.repeat(2, 1, 1, 1),
            torch.full((2 * settings.batch,), 500.0, device=device),
            cond.repeat(2, 1, 1),
        )
    provider, reason = open_gpu_provider() if device.type == "cuda" else (None, "no CUDA device")
    rows = []
    appliers = library_appliers(dtype, GraphCache())  # graphs kept across rows, as in steady use
    for label, plan in default_plans():
        try:
            applied = apply_plan(unet, plan, compute_dtype=dtype, appliers=appliers)
        except SpeedkitError as error:
            rows.append({"label": label, "unavailable": str(error)})
            continue
        if applied.skipped:  # a row must measure what its label says, not the plan without a switch
            applied()
            rows.append({"label": label, "unavailable": "; ".join(applied.skipped.values())})
            continue
        with applied:
            rows.append(
                _time_plan(
                    label,
                    unet,
                    applied.policy,
                    noise,
                    sigmas,
                    cond,
                    uncond,
                    autocast,
                    settings,
                    device,
                    flops_full,
                    provider,
                    reason,
                )
            )
        progress(f"{label}: done")
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "unet": size,
        "dtype": str(dtype),
        "resolution": latent * 8,
        "batch": settings.batch,
        "steps": settings.steps,
        "tflop_per_guided_step": flops_full / 1e12,
        "rows": rows,
    }


def _time_plan(
    label, unet, policy, noise, sigmas, cond, uncond, autocast, settings, device, flops_full, provider, reason
) -> dict:
    denoiser = CutoffCFGDenoiser(EpsDenoiser(unet).to(device), policy)
    extra = {"cond": cond, "uncond": uncond, "cond_scale": 7.0}
    sampler = TelemetrySampler(provider, unavailable=reason)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with autocast:
        for run in range(settings.runs + 1):  # the first run warms up
            denoiser.begin(settings.steps)
            if run == 1:
                sampler.start()
            _sync(device)
            start = time.perf_counter()
            sample_euler(denoiser, noise, sigmas, extra)
            _sync(device)
            if run:
                times.append((time.perf_counter() - start) / settings.steps)
    telemetry = sampler.report()
    counters = denoiser.counters
    flops = flops_full * (counters.with_uncond + counters.without_uncond / 2) / settings.steps
    per_step = summarise(times)
    return {
        "label": label,
        "ms_per_step": {k: v * 1000 for k, v in per_step.as_dict().items() if k in ("median", "min", "max")},
        "its": 1.0 / per_step.median,
        "tflops": flops / per_step.median / 1e12,
        "gpu_util_mean": telemetry.mean("utilisation_percent"),
        "vram_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "unet_calls": {"with_uncond": counters.with_uncond, "without_uncond": counters.without_uncond},
    }


def to_text(result: dict) -> str:
    lines = [
        f"{result['device']}: {result['unet']} UNet ({result['dtype']}), {result['resolution']}², batch "
        f"{result['batch']}, {result['steps']} Euler steps with CFG; {result['tflop_per_guided_step']:.3g} TFLOP "
        "per guided step; random weights",
        f"{'configuration':<26} {'ms/step (min–max)':>22} {'it/s':>7} {'TFLOP/s':>8} {'GPU %':>6} {'VRAM MB':>8}",
    ]
    for row in result["rows"]:
        if "unavailable" in row:
            lines.append(f"{row['label']:<26} unavailable: {row['unavailable']}")
            continue
        ms = row["ms_per_step"]
        util = "n/a" if row["gpu_util_mean"] is None else f"{row['gpu_util_mean']:.0f}"
        vram = "n/a" if row["vram_peak_mb"] is None else f"{row['vram_peak_mb']:.0f}"
        lines.append(
            f"{row['label']:<26} {ms['median']:>8.2f} ({ms['min']:.2f}–{ms['max']:.2f}) {row['its']:>7.2f} "
            f"{row['tflops']:>8.3g} {util:>6} {vram:>8}"
        )
    return "\n".join(lines)
