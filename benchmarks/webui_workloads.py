"""Where people generate: SD1.5 and SDXL workloads through a real A1111 1.10.1 with this repository
as an extension, stock against the lossless fast path, in two orders (issue #12).

  python benchmarks/webui_workloads.py --a1111 DIR --model sd15|sdxl [--runs 5] [--work DIR] [--out DIR]

Models are random-weight checkpoints built on the machine (every parameter re-randomised, fan-in
scaled, fp16): SD1.5 from configs/v1-inference.yaml, SDXL from generative-models'
sd_xl_base.yaml (the config A1111 loads SDXL with); a random kohya-layout LoRA (rank 32, every
attention and feed-forward layer of the UNet and the text encoder) for the LoRA workload.

Workloads (--model sd15): Asuka 512² (Euler 28, CFG 12, clip skip 2); 512² DPM++ 2M Karras 20;
512² batch 4; 1024²; 512² with the LoRA in the prompt; hires fix 512→1024 (Latent, denoising 0.5,
whole request through /sdapi/v1/txt2img, each run paired with the same request without images in
the answer: `seconds_without_images`, the generation without the API's PNG encoding); 512² with a
UNet hook that copies from the CPU (every capture fails: what a failed capture costs).
--model sdxl: SDXL 1024², Euler 20, without and with a LoRA (UNet layers only).

Configurations: stock = Speedkit off with Settings → Optimizations "sdp - scaled dot product";
lossless = Speedkit on with CUDA graph + channels-last + lean step (the "Lossless" mode's switches).
Orders, per workload:
  steady   each configuration's runs back to back after one warm-up (POST /speedkit/v1/bench,
           sampler it/s synchronised around sampling);
  toggle   stock and lossless alternating, one run each, after the steady runs (what an XYZ grid
           or A/B by hand does).
Images: every run's pixel digest (SHA-256 of the 8-bit RGB image) against stock's; with the LoRA,
also against the same switches without the graph, and in the generations after it; one image per
configuration saved, with its difference from stock (a digest match means nothing on a flat image).

Outputs in --out: results.json (everything), report.md (the tables, paired toggle ratios, image
differences), images/, webui.log. On a GPU machine without a package index: benchmarks/gpu_machine.sh.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import statistics
import sys
import time
import traceback
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import webui_asuka as asuka  # noqa: E402  (standard library only at import time)
from webui_asuka import LOSSLESS, Server, args, harness  # noqa: E402

SDXL_CHECKPOINT = "random-sdxl.safetensors"
LORA_NAME = "random-kohya-lora"
LORA_RANK = 32
HOOK_EXTENSION = REPO / "benchmarks" / "extensions" / "speedkit-bench-cpu-copy"
PROFILE_EXTENSION = REPO / "benchmarks" / "extensions" / "speedkit-bench-profile"
STOCK = None
FAST = args(**LOSSLESS)
GRAPH_ONLY = args(cuda_graph=True)
FAST_EAGER = args(**{**LOSSLESS, "cuda_graph": False})  # the same switches without the graph


@dataclass(frozen=True)
class Workload:
    name: str
    overrides: dict = field(default_factory=dict)
    large: bool = False  # fewer runs (--runs-large)
    hook: bool = False  # the CPU-copy hook on while it runs
    hires: bool = False  # through /sdapi/v1/txt2img, whole-request seconds

    @property
    def lora(self) -> bool:
        return self.overrides.get("prompt") == "LORA"


LORA_PROMPT_TAG = f"<lora:{LORA_NAME}:1>"
SD15_WORKLOADS = [
    Workload("Asuka 512², Euler 28"),
    Workload("512², DPM++ 2M Karras 20", {"sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 20}),
    Workload("512², batch 4", {"batch_size": 4}, large=True),
    Workload("1024² SD1.5", {"width": 1024, "height": 1024}, large=True),
    Workload("512² with a LoRA in the prompt", {"prompt": "LORA"}),
    Workload("hires 512→1024 (whole request)", hires=True, large=True),
    Workload("512², a UNet hook copies from the CPU (captures fail)", hook=True),
]
SDXL_1024 = {"width": 1024, "height": 1024, "steps": 20, "clip_skip": 1}
SDXL_WORKLOADS = [
    Workload("SDXL 1024², Euler 20", SDXL_1024),
    Workload("SDXL 1024² with a LoRA in the prompt", {**SDXL_1024, "prompt": "LORA"}),
]


# ------------------------------------------------------------------------------------------ build


def skip_weight_init():
    """Module constructors leave weights uninitialised (everything is re-randomised afterwards):
    initialising 3.5 B parameters on the CPU would take minutes. Returns the undo."""
    import torch

    names = ("kaiming_uniform_", "kaiming_normal_", "uniform_", "normal_", "trunc_normal_", "xavier_uniform_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *a, **k: tensor)

    def undo():
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)

    return undo


def instantiate_sdxl(config):
    """sgm's DiffusionEngine offline: CLIP-L from the cached config, OpenCLIP bigG without its
    pretrained download; weights random."""
    import open_clip
    import sgm.modules.encoders.modules as encoders
    from sgm.util import instantiate_from_config
    from transformers import CLIPTextConfig, CLIPTextModel

    class RandomCLIPTextModel:
        @staticmethod
        def from_pretrained(version):
            return CLIPTextModel(CLIPTextConfig.from_pretrained(version))

    create = open_clip.create_model_and_transforms

    def create_without_download(*a, pretrained=None, **k):
        return create(*a, pretrained=None, **k)

    undo_init = skip_weight_init()
    encoders.CLIPTextModel, encoders.open_clip.create_model_and_transforms = (
        RandomCLIPTextModel,
        create_without_download,
    )
    try:
        return instantiate_from_config(config)
    finally:
        encoders.CLIPTextModel, encoders.open_clip.create_model_and_transforms = CLIPTextModel, create
        undo_init()


def write_sdxl_checkpoint(root: Path, a1111: Path, shrink: bool = False) -> Path:
    """sd_xl_base.yaml, random, fp16. `shrink` (CPU checks of this script only): a small UNet,
    with its yaml beside the checkpoint so that A1111 loads it with that config."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    sys.path.insert(0, str(a1111 / "repositories" / "generative-models"))
    config = OmegaConf.load(
        str(a1111 / "repositories" / "generative-models" / "configs" / "inference" / "sd_xl_base.yaml")
    )
    if shrink:
        config.model.params.network_config.params.update(model_channels=64, transformer_depth=[1, 1, 1])
        OmegaConf.save(config, root / SDXL_CHECKPOINT.replace(".safetensors", ".yaml"))
    torch.manual_seed(asuka.SEED)
    model = instantiate_sdxl(config.model)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    asuka.rerandomise_(model, asuka.SEED)  # all of it: constructors left the weights uninitialised
    state = {
        name: (t.half() if t.is_floating_point() else t).contiguous().cpu() for name, t in model.state_dict().items()
    }
    del model
    path = root / SDXL_CHECKPOINT
    save_file(state, str(path), metadata={"speedkit": "random SDXL checkpoint (sd_xl_base.yaml), fp16"})
    return path


def write_sdxl_preview_model(root: Path) -> None:
    """The live preview's "Approx NN" decoder for SDXL, random: A1111 downloads its own on the first
    SDXL preview, and the GPU machine has no network. Same layer shapes (modules/sd_vae_approx.py)."""
    import torch

    generator = torch.Generator().manual_seed(asuka.SEED)
    channels = [4, 8, 16, 32, 64, 32, 16, 8, 3]
    kernels = [7, 5, 3, 3, 3, 3, 3, 3]
    state = {}
    for index, kernel in enumerate(kernels, start=1):
        fan_in = channels[index - 1] * kernel * kernel
        shape = (channels[index], channels[index - 1], kernel, kernel)
        state[f"conv{index}.weight"] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        state[f"conv{index}.bias"] = torch.zeros(channels[index])
    (root / "VAE-approx").mkdir(exist_ok=True)
    torch.save(state, root / "VAE-approx" / "vaeapprox-sdxl.pt")


def kohya_lora(unet_names: dict, text_names: dict, seed: int) -> dict:
    """A rank-32 LoRA for the given {kohya key: weight shape}; the update is small but not zero."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in {**unet_names, **text_names}.items():
        out_features, in_features = shape[0], shape[1]
        tail = tuple(shape[2:])
        down = torch.randn((LORA_RANK, in_features, *tail), generator=generator) / math.sqrt(in_features)
        up = (
            0.05
            * torch.randn((out_features, LORA_RANK, *(1 for _ in tail)), generator=generator)
            / math.sqrt(LORA_RANK)
        )
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK / 2))
    return tensors


def lora_targets(checkpoint: Path) -> tuple[dict, dict]:
    """Kohya keys, with weight shapes, of what kohya's trainer targets: the UNet's transformer
    layers (attention, feed-forward, proj_in/out) and the text encoder's attention and MLP."""
    from safetensors import safe_open

    unet_prefix, text_prefix = "model.diffusion_model.", "cond_stage_model.transformer.text_model.encoder."
    unet, text = {}, {}
    with safe_open(str(checkpoint), "pt") as f:
        for key in f.keys():
            shape = tuple(f.get_slice(key).get_shape())
            if not key.endswith(".weight") or len(shape) < 2:
                continue
            name = key[: -len(".weight")]
            if key.startswith(unet_prefix) and (
                ".transformer_blocks." in key or name.endswith(("proj_in", "proj_out"))
            ):
                unet["lora_unet_" + name[len(unet_prefix) :].replace(".", "_")] = shape
            elif key.startswith(text_prefix) and (".self_attn." in key or ".mlp." in key):
                text["lora_te_text_model_encoder_" + name[len(text_prefix) :].replace(".", "_")] = shape
    return unet, text


def write_lora(root: Path, checkpoint: Path) -> None:
    """The LoRA for `checkpoint`. SDXL: the UNet's layers only (its text encoders use other key
    layouts; what matters for the fast path is the UNet)."""
    from safetensors.torch import save_file

    unet, text = lora_targets(checkpoint)
    (root / "Lora").mkdir(exist_ok=True)
    lora = kohya_lora(unet, text, asuka.SEED)
    save_file(lora, str(root / "Lora" / f"{LORA_NAME}.safetensors"), {"ss_network_dim": str(LORA_RANK)})
    print(f"built {checkpoint.name} and a LoRA for {len(unet)} UNet and {len(text)} text-encoder layers", flush=True)


def build(root: Path, a1111: Path, model: str, shrink: bool) -> None:
    asuka.prepare_build(root, a1111)
    if model == "sdxl":
        checkpoint = write_sdxl_checkpoint(root, a1111, shrink)
        write_sdxl_preview_model(root)
    else:
        checkpoint = asuka.write_checkpoint(root, a1111)
    write_lora(root, checkpoint)


# ------------------------------------------------------------------------------------------ measure


def bench(server: Server, overrides: dict, speedkit, runs: int, warmup: int, label: str) -> dict:
    """One POST /speedkit/v1/bench: `runs` timed generations after `warmup`; the runs' records."""
    body = {"preset": "Asuka test", "overrides": {**overrides, "runs": runs, "warmup": warmup}, "speedkit": speedkit}
    result = harness.http_json(server.url + "/speedkit/v1/bench", {**body, "label": label}, timeout=3000)
    return {
        "sampler_its": [run["sampler_its"] for run in result["runs"]],
        "seconds": [run["total_s"] for run in result["runs"]],
        "end_to_end_its": [run["end_to_end_its"] for run in result["runs"]],
        "phases": [run.get("phases_s") for run in result["runs"]],
        "speedkit_overhead": [run.get("speedkit_overhead_s") for run in result["runs"]],
        "digests": [run["image_sha256"] for run in result["runs"]],
        "cuda_graph": [run.get("cuda_graph") for run in result["runs"]],
        "deepcache": [run.get("deepcache") for run in result["runs"]],
        "notes": sorted({note for run in result["runs"] for note in run.get("notes") or []}),
        "vram_reserved_peak_mb": result["vram"].get("reserved_peak_mb"),
    }


def hires_request(workload_overrides: dict, speedkit) -> dict:
    request = {
        "prompt": "PROMPT",
        "steps": 28,
        "cfg_scale": 12,
        "seed": 2870305590,
        "width": 512,
        "height": 512,
        "sampler_name": "Euler",
        "scheduler": "Automatic",
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": "Latent",
        "hr_sampler_name": "Euler",
        "hr_second_pass_steps": 0,
        "denoising_strength": 0.5,
        "override_settings": {"CLIP_stop_at_last_layers": 2},
        "save_images": False,
        "send_images": True,
        "alwayson_scripts": {"speedkit": {"args": speedkit}} if speedkit else {},
    }
    return {**request, **workload_overrides}


def file_slug(name: str) -> str:
    """`name` as part of a file name: ASCII letters and digits, the rest "-"."""
    return "".join(c if c.isalnum() else "-" for c in name.encode("ascii", "ignore").decode())


def asuka_prompts() -> dict:
    """The Asuka preset's prompt pair as /sdapi/v1/txt2img fields."""
    from lib_speedkit.bench.presets import get_preset

    preset = get_preset("Asuka test")
    return {"prompt": preset.prompt, "negative_prompt": preset.negative_prompt}


def image_and_params(answer: dict) -> tuple:
    """A /sdapi/v1/txt2img answer's first image (RGB) and its extra generation params."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).convert("RGB")
    return image, json.loads(answer["info"])["extra_generation_params"]


def txt2img(
    server: Server, overrides: dict, speedkit, runs: int, warmup: int, label: str, without_images: bool = True
) -> dict:
    """Hires fix through the WebUI's own API: whole-request seconds as a user waits for them, each
    timed run paired (`without_images`) with the same request without images in the answer
    (`send_images` false: the generation without the API's PNG encoding and base64 of the image,
    which the WebUI does on the CPU after the generation, the same work whatever generated it)."""
    from lib_speedkit.bench.imagediff import image_digest

    request = hires_request({**asuka_prompts(), **overrides}, speedkit)
    measured = {"seconds": [], "seconds_without_images": [], "digests": [], "claims": []}
    for index in range(warmup + runs):
        seconds, answer = timed_request(server, request)
        if index < warmup:
            continue
        image, params = image_and_params(answer)
        measured["seconds"].append(seconds)
        if without_images:
            measured["seconds_without_images"].append(timed_request(server, {**request, "send_images": False})[0])
        measured["digests"].append(image_digest(image))
        measured["claims"].append({k: v for k, v in params.items() if k.startswith("Speedkit")})
    return measured


def timed_request(server: Server, request: dict) -> tuple[float, dict]:
    """(seconds, answer) of one /sdapi/v1/txt2img request."""
    started = time.perf_counter()
    answer = harness.http_json(server.url + "/sdapi/v1/txt2img", request, timeout=3000)
    return time.perf_counter() - started, answer


def txt2img_fields(overrides: dict) -> dict:
    """/sdapi/v1/txt2img fields for bench preset overrides."""
    fields = {("sampler_name" if key == "sampler" else key): value for key, value in overrides.items()}
    clip_skip = fields.pop("clip_skip", 2)
    return {**fields, "enable_hr": False, "override_settings": {"CLIP_stop_at_last_layers": clip_skip}}


def sample_images(server: Server, workload: Workload, overrides: dict, folder: Path) -> dict:
    """One image per configuration through /sdapi/v1/txt2img, saved, and how far lossless is from
    stock (a digest match means nothing if the image is flat: its pixel spread is reported too)."""
    from lib_speedkit.bench.imagediff import compare, to_array

    fields = {**asuka_prompts(), **(overrides if workload.hires else txt2img_fields(overrides))}
    images = {}
    for name, speedkit in (("stock", STOCK), ("lossless", FAST)):
        answer = harness.http_json(server.url + "/sdapi/v1/txt2img", hires_request(fields, speedkit), timeout=3000)
        images[name], _params = image_and_params(answer)
        folder.mkdir(parents=True, exist_ok=True)
        images[name].save(folder / f"{file_slug(workload.name)}-{name}.png")
    return {
        "stock_pixel_std": float(to_array(images["stock"]).std()),
        "lossless_vs_stock": compare(images["lossless"], images["stock"]).as_dict(),
    }


def measure(server: Server, workload: Workload, runs: int) -> dict:
    """Steady state for stock and lossless, then both alternating; every run's image digest."""
    overrides = dict(workload.overrides)
    if workload.lora:
        overrides["prompt"] = f"{LORA_PROMPT_TAG} {asuka_prompts()['prompt']}"
    one = txt2img if workload.hires else bench
    if workload.hook:
        harness.http_json(server.url + "/speedkit-bench/cpu-copy", {"on": True})
    try:
        steady = {
            "stock": one(server, overrides, STOCK, runs, 1, f"{workload.name}: stock"),
            "lossless": one(server, overrides, FAST, runs, 1, f"{workload.name}: lossless"),
        }
        alternating = {"stock": STOCK, "lossless": FAST}
        if workload.hook:  # what a failed capture costs, paired with stock run by run
            alternating["graph only"] = GRAPH_ONLY
        toggle = {name: [] for name in alternating}
        for _ in range(runs):
            for name, speedkit in alternating.items():
                toggle[name].append(one(server, overrides, speedkit, 1, 0, f"{workload.name}: {name} (toggle)"))
        if workload.hook:
            steady["graph only"] = one(server, overrides, GRAPH_ONLY, runs, 1, f"{workload.name}: graph only")
        if workload.lora:
            steady["lossless without the graph"] = one(
                server, overrides, FAST_EAGER, runs, 1, f"{workload.name}: lossless without the graph"
            )
    finally:
        if workload.hook:
            harness.http_json(server.url + "/speedkit-bench/cpu-copy", {"on": False})
    return {"workload": workload.name, "overrides": overrides, "steady": steady, "toggle": merge(toggle)}


def merge(toggle: dict) -> dict:
    """One record per configuration from its one-run records: lists joined, single values listed."""
    merged = {}
    for name, records in toggle.items():
        merged[name] = {}
        for key in records[0]:
            values = [r[key] for r in records]
            joined = all(isinstance(v, list) for v in values)
            merged[name][key] = [item for v in values for item in v] if joined else values
        merged[name]["notes"] = sorted(set(merged[name].get("notes", [])))
    return merged


def after_the_lora(server: Server, workload: Workload, runs: int) -> dict:
    """The next generations without the LoRA: the same switches with and without the graph
    (the graph must not replay the LoRA's merged weights), and stock."""
    overrides = {k: v for k, v in workload.overrides.items() if k != "prompt"}
    return {
        "lossless": bench(server, overrides, FAST, runs, 0, "after the LoRA: lossless"),
        "lossless without the graph": bench(server, overrides, FAST_EAGER, 1, 0, "after the LoRA: without the graph"),
        "stock": bench(server, overrides, STOCK, 1, 0, "after the LoRA: stock"),
    }


# ------------------------------------------------------------------------------------------ report


def median(values: list) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def speed(record: dict) -> tuple[float | None, str, float | None]:
    """(median, 'min–max', value where larger is faster) for a bench or a txt2img record."""
    if "sampler_its" in record:
        values = record["sampler_its"]
        return median(values), f"{min(values):.2f}–{max(values):.2f}", median(values)
    values = record["seconds"]
    return median(values), f"{min(values):.3f}–{max(values):.3f}", 1 / median(values)


def images_match(record: dict, reference: dict) -> str:
    reference_digests = set(reference["digests"])
    if len(reference_digests) != 1:
        return f"stock itself varies ({len(reference_digests)} digests)"
    same = sum(digest in reference_digests for digest in record["digests"])
    return "identical" if same == len(record["digests"]) else f"{same}/{len(record['digests'])} identical"


def graph_claim(record: dict) -> str:
    if "claims" in record:
        return "; ".join(sorted({str(c.get("Speedkit CUDA graph", "none")) for c in record["claims"]}))
    replays = [g["replays"] for g in record["cuda_graph"] if g]
    eager = [sum(g["eager_calls"].values()) for g in record["cuda_graph"] if g]
    if not replays:
        return "no graph"
    return f"replays {median(replays):g}, eager {median(eager):g} per run"


def workload_rows(result: dict) -> list[str]:
    rows = []
    stock_steady = result["steady"]["stock"]
    unit = "it/s" if "sampler_its" in stock_steady else "s"
    base_value = speed(stock_steady)[2]
    for order in ("steady", "toggle"):
        for name, record in result[order].items():
            value, spread, faster = speed(record)
            ratio = faster / base_value if base_value else float("nan")
            notes = "; ".join(record.get("notes") or [])
            rows.append(
                f"| {result['workload']} | {order} | {name} | {value:.3f} {unit} ({spread}) | {ratio:.2f} "
                f"| {images_match(record, stock_steady)} | {graph_claim(record)} | {notes} |"
            )
    return rows


def paired_line(result: dict) -> str:
    """Median over rounds of the toggle order of a configuration's speed over stock's in the same
    round: robust against slow drifts of a noisy eager baseline."""
    toggle = result.get("toggle") or {}
    if "sampler_its" not in toggle.get("stock", {}):
        return ""
    stock = toggle["stock"]["sampler_its"]
    parts = []
    for name, record in toggle.items():
        if name != "stock":
            ratios = [mine / theirs for mine, theirs in zip(record["sampler_its"], stock, strict=True)]
            parts.append(f"{name} {median(ratios):.3f}× (min {min(ratios):.2f}, max {max(ratios):.2f})")
    return f"- {result['workload']}: paired with stock round by round: {', '.join(parts)}\n"


def without_images_line(result: dict) -> str:
    """Hires requests without images in the answer: median seconds and × stock per configuration."""
    steady = result.get("steady") or {}
    seconds = {name: median(record.get("seconds_without_images") or []) for name, record in steady.items()}
    stock = seconds.get("stock")
    if not stock:
        return ""
    parts = [f"{name} {value:.3f} s ({stock / value:.2f}×)" for name, value in seconds.items() if value]
    return (
        f"- {result['workload']}: the same requests without images in the answer (send_images false): "
        f"{', '.join(parts)}\n"
    )


def image_line(result: dict) -> str:
    images = result.get("images")
    if not images:
        return ""
    diff = images["lossless_vs_stock"]
    psnr = "∞" if diff["psnr_db"] is None else f"{diff['psnr_db']:.1f} dB"
    return (
        f"- {result['workload']}: stock image pixel std {images['stock_pixel_std']:.1f}; lossless vs stock "
        f"max |diff| {diff['max_abs']}, mean {diff['mean_abs']:.3f}, PSNR {psnr}\n"
    )


def markdown(results: list[dict]) -> str:
    lines = [
        "| workload | order | configuration | median (min–max) | × stock steady | images vs stock "
        "| CUDA graph | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['workload']} | | | ERROR {result['error'][:300]} | | | | |")
            continue
        lines += workload_rows(result)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ run


def link_into_data_dir(server: Server, assets: Path) -> None:
    """The benchmark extensions (CPU-copy hook, hook profiler), and the built LoRA and preview model
    where A1111 looks."""
    links = {server.data_dir / "extensions" / ext.name: ext for ext in (HOOK_EXTENSION, PROFILE_EXTENSION)}
    for folder in ("Lora", "VAE-approx"):
        if (assets / folder).exists():
            links[server.data_dir / "models" / folder] = assets / folder
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)


def run(ns) -> int:
    setup = prepared(ns)
    if setup is None:
        return 1
    server, out, scale = setup.server, setup.out, setup.scale
    workloads = SDXL_WORKLOADS if ns.model == "sdxl" else SD15_WORKLOADS
    if ns.only:
        workloads = [w for w in workloads if any(part in w.name for part in ns.only.split(","))]
    result = {"command": server.command(), "build_seconds": setup.build_seconds, "workloads": [], "errors": []}

    def measure_one(workload: Workload) -> dict:
        runs = ns.runs_large if workload.large else ns.runs
        workload = Workload(workload.name, {**workload.overrides, **scale.get("bench", {})} if not workload.hires
                            else {**workload.overrides, **scale.get("hires", {})}, workload.large, workload.hook,
                            workload.hires)  # fmt: skip
        record = measure(server, workload, runs)
        if workload.lora:
            record["after_the_lora"] = after_the_lora(server, workload, runs)
        record["images"] = sample_images(server, workload, record["overrides"], out / "images")
        return record

    try:
        result["startup_seconds"] = start_with_stock_attention(server)
        measure_each(out, result, [(w.name, w) for w in workloads], measure_one, markdown)
        result["status"] = harness.http_json(server.url + "/speedkit/v1/status")
    except Exception:  # noqa: BLE001 - keep what was measured, report the failure
        result["errors"].append(traceback.format_exc())
        print("ERROR", traceback.format_exc(), server.tail(), flush=True)
    finally:
        images = "".join(image_line(record) for record in result["workloads"])
        paired = "".join(paired_line(record) for record in result["workloads"] if "error" not in record)
        report = markdown(result["workloads"]) + after_lora_markdown(result["workloads"])
        report += "\nToggle order, paired ratios:\n" + paired if paired else ""
        report += "".join(without_images_line(record) for record in result["workloads"] if "error" not in record)
        images = "\nOne image per configuration (images/):\n" + images if images else ""
        stop_and_save(server, out, result, report + images)
    return 1 if result["errors"] else 0


@dataclass
class Prepared:
    """A benchmark's WebUI, built and linked but not started, with its output folder."""

    server: Server
    out: Path
    scale: dict  # CPU check: {"bench": {...}, "hires": {...}} overrides for every workload
    build_seconds: float


def prepared(ns) -> Prepared | None:
    """The random checkpoint of `ns.model` (built the first time), the server with the assets
    linked into its data folder, and `ns.out`; None when the build failed."""
    a1111, work, out = Path(ns.a1111).resolve(), Path(ns.work).resolve(), Path(ns.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    assets = work / f"assets-{ns.model}"
    started = time.monotonic()
    checkpoint = built_checkpoint(a1111, assets, ns.model, ns.shrink)
    if checkpoint is None:
        return None
    server = Server(a1111, work, assets, checkpoint, ns.port, ns.webui_arg or [])
    link_into_data_dir(server, assets)
    scale = json.loads(ns.scale_overrides) if ns.scale_overrides else {}
    return Prepared(server, out, scale, time.monotonic() - started)


def built_checkpoint(a1111: Path, assets: Path, model: str, shrink: bool) -> Path | None:
    """The random-weight checkpoint (and LoRA) for `model` in `assets`, built the first time in a
    subprocess (so its memory is given back before the WebUI starts); None when the build failed."""
    checkpoint = assets / (SDXL_CHECKPOINT if model == "sdxl" else asuka.CHECKPOINT)
    if not checkpoint.exists():
        import subprocess

        command = [sys.executable, __file__, "build", str(assets), "--a1111", str(a1111), "--model", model]
        if subprocess.run(command + (["--shrink"] if shrink else []), text=True).returncode:
            return None
    return checkpoint


def start_with_stock_attention(server: Server) -> float:
    """Start the WebUI with "sdp - scaled dot product" (stock) and the LoRAs listed; its startup seconds."""
    seconds = server.start()
    harness.http_json(server.url + "/sdapi/v1/options", {"cross_attention_optimization": asuka.STOCK_ATTENTION})
    harness.http_json(server.url + "/sdapi/v1/refresh-loras", {})
    return seconds


def measure_each(out: Path, result: dict, items: list, measure_one, render) -> None:
    """`measure_one(item)` for each (name, item): its record (with its seconds) or the error's, printed
    with `render` and saved to results.json after each, so that a run cut short keeps what it had."""
    for name, item in items:
        began = time.monotonic()
        try:
            record = measure_one(item)
        except MEASUREMENT_ERRORS as error:
            record = error_record(name, error)
            result["errors"].append(record["error"])
        record["seconds"] = time.monotonic() - began
        result["workloads"].append(record)
        print(render([record]), flush=True)
        (out / "results.json").write_text(json.dumps(result, indent=1, default=str))


MEASUREMENT_ERRORS = (urllib.error.URLError, OSError, KeyError, ValueError)
"""What a workload's measurement may fail with: the record says so and the next workload runs."""


def error_record(name: str, error: BaseException) -> dict:
    """A workload's record when its measurement failed (an HTTP error's body included)."""
    detail = error.read().decode(errors="replace")[:1500] if isinstance(error, urllib.error.HTTPError) else ""
    return {"workload": name, "error": f"{error!r} {detail}"}


def stop_and_save(server: Server, out: Path, result: dict, report: str) -> None:
    """Stop the WebUI and write its log, results.json and report.md into `out`."""
    server.stop()
    (out / "webui.log").write_text(server.log_path.read_text(errors="replace") if server.log_path.exists() else "")
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "report.md").write_text(report)


def after_lora_markdown(results: list[dict]) -> str:
    """Bit-identity with a LoRA: the graph against eager with the same switches, with the LoRA and
    in the generations after it."""
    lines = []
    for result in results:
        after = result.get("after_the_lora")
        if not after:
            continue
        steady = result["steady"]
        lines.append(
            f"\nWith the LoRA: lossless vs the same switches without the graph: "
            f"{images_match(steady['lossless'], steady['lossless without the graph'])}. "
            f"After it, without the LoRA: lossless {median(after['lossless']['sampler_its']):.2f} it/s, "
            f"vs the same switches without the graph: "
            f"{images_match(after['lossless'], after['lossless without the graph'])}; "
            f"without the graph vs stock: {images_match(after['lossless without the graph'], after['stock'])}\n"
        )
    return "".join(lines)


def add_common_arguments(parser, name: str, port: int, a1111_required: bool = True) -> None:
    """The arguments every WebUI benchmark script takes (`name`: its work and out folders)."""
    parser.add_argument("--a1111", required=a1111_required, help="an A1111 v1.10.1 checkout with its repositories/")
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--work", default=f"/tmp/speedkit-{name}")
    parser.add_argument("--out", default=f"{name}-out")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runs-large", type=int, default=3, help="runs of batch 4, 1024², hires (and SDXL)")
    parser.add_argument("--only", help="comma-separated parts of workload names to run")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--shrink", action="store_true", help="CPU check of the script: a small SDXL UNet")
    parser.add_argument("--webui-arg", action="append", help="extra launch.py flag (repeatable)")
    parser.add_argument(
        "--scale-overrides",
        help='CPU check of the script: JSON {"bench": {preset fields}, "hires": {txt2img fields}}, every workload',
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    build_parser = commands.add_parser("build", help="only build the checkpoint (and LoRA) into ROOT")
    build_parser.add_argument("root")
    build_parser.add_argument("--a1111", required=True)
    build_parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    build_parser.add_argument("--shrink", action="store_true")
    add_common_arguments(parser, "workloads", 7862, a1111_required=False)
    ns = parser.parse_args()
    if ns.command == "build":
        build(Path(ns.root).resolve(), Path(ns.a1111).resolve(), ns.model, ns.shrink)
        return 0
    if not ns.a1111:
        parser.error("--a1111 is required")
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
