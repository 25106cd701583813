"""DeepCache in a real A1111 1.10.1 (issue #15): speed and image difference against stock for
N = 2, 3, 5, on SD1.5 and SDXL, eager and on the lossless fast path.

  python benchmarks/webui_deepcache.py --a1111 DIR --model sd15|sdxl [--runs 5] [--runs-large 3]
         [--work DIR] [--out DIR]

Models and LoRA: random-weight checkpoints built on the machine, as benchmarks/webui_workloads.py
builds them (its `build`). Configurations: stock (Speedkit off, "sdp - scaled dot product"),
lossless (CUDA graph + channels-last + lean step), DeepCache N alone (eager), lossless + DeepCache
N; branch 0, no window. Workloads:
  --model sd15   Asuka 512² Euler 28 (every configuration); DPM++ 2M Karras 20, batch 4, 1024²,
                 the LoRA in the prompt and hires fix 512→1024 (stock, lossless, lossless + N=3)
  --model sdxl   SDXL 1024² Euler 20 (every configuration)
  --options      Asuka 512² (SDXL: 1024²) with N=3 on the fast path and a full-step window or a
                 deeper branch; SD1.5 also Heun 14 (two model evaluations per step)
  --compiled     the compiled UNet (#13) on the fast path (SD1.5 also with DeepCache N=3); the
                 seconds of graph captures in each configuration's warm-up include its compiles
Orders: steady (each configuration's runs back to back after one warm-up, POST /speedkit/v1/bench)
and toggle (stock, lossless and lossless + N=3 alternating, one run each).

Image difference: one image per configuration through /sdapi/v1/txt2img against stock's (max
pixel difference, PSNR), and against lossless (what DeepCache alone changes). With random weights
the images are noise-like textures, not pictures: the PSNR says how far DeepCache moves the
pixels, not how a trained model's picture looks.

Outputs in --out: results.json, report.md, images/, webui.log. On the GPU machine without a
package index: benchmarks/gpu_machine.sh.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import webui_workloads as workloads  # noqa: E402  (standard library only at import time)
from webui_asuka import LOSSLESS, Server, args, harness  # noqa: E402

INTERVALS = (2, 3, 5)
STOCK = None
FAST = args(**LOSSLESS)


def deepcache(interval: int, fast: bool) -> list:
    return args(**(LOSSLESS if fast else {}), deepcache_interval=interval)


def every_configuration() -> dict:
    configurations = {"stock": STOCK, "lossless": FAST}
    configurations |= {f"DeepCache N={n}": deepcache(n, fast=False) for n in INTERVALS}
    configurations |= {f"lossless + DeepCache N={n}": deepcache(n, fast=True) for n in INTERVALS}
    return configurations


def few_configurations() -> dict:
    return {"stock": STOCK, "lossless": FAST, "lossless + DeepCache N=3": deepcache(3, fast=True)}


SD15 = [
    ("Asuka 512², Euler 28", {}, every_configuration()),
    ("512², DPM++ 2M Karras 20", {"sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 20}, few_configurations()),
    ("512², batch 4", {"batch_size": 4, "large": True}, few_configurations()),
    ("1024² SD1.5", {"width": 1024, "height": 1024, "large": True}, few_configurations()),
    ("512² with a LoRA in the prompt", {"prompt": "LORA"}, few_configurations()),
    ("hires 512→1024 (whole request)", {"hires": True, "large": True}, few_configurations()),
]
SDXL = [("SDXL 1024², Euler 20", dict(workloads.SDXL_1024), every_configuration())]


def option_configurations() -> dict:
    """N=3 on the fast path with a full-step window or a deeper branch (--options)."""
    options = {"start 3": {"deepcache_start": 3}, "end 3": {"deepcache_end": 3}}
    options |= {"start 3, end 3": {"deepcache_start": 3, "deepcache_end": 3}}
    options |= {f"branch {b}": {"deepcache_branch": b} for b in (1, 3, 6)}
    configurations = {"stock": STOCK, "lossless": FAST, "lossless + DeepCache N=3": deepcache(3, fast=True)}
    for label, values in options.items():
        configurations[f"lossless + DeepCache N=3, {label}"] = args(**LOSSLESS, deepcache_interval=3, **values)
    return configurations


SDXL_OPTIONS = [("SDXL 1024², Euler 20: window and branch", dict(workloads.SDXL_1024), option_configurations())]
SD15_OPTIONS = [
    ("Asuka 512², Euler 28: window and branch", {}, option_configurations()),
    ("512², Heun 14 (two evaluations per step)", {"sampler": "Heun", "steps": 14}, few_configurations()),
]
"""(name, preset overrides; "hires": through /sdapi/v1/txt2img; "large": --runs-large runs, configurations)"""
TOGGLED = ("stock", "lossless", "lossless + DeepCache N=3", "lossless + compiled")
"""The configurations the toggle order alternates (those a workload has)."""


def compiled_configurations(with_deepcache: bool) -> dict:
    """The compiled UNet (issue #13) on the fast path, and with DeepCache N=3 on top (--compiled)."""
    configurations = {"stock": STOCK, "lossless": FAST, "lossless + compiled": args(**LOSSLESS, compile_unet=True)}
    if with_deepcache:
        configurations["lossless + compiled + DeepCache N=3"] = args(
            **LOSSLESS, compile_unet=True, deepcache_interval=3
        )
    return configurations


SD15_COMPILED = [("Asuka 512², Euler 28: compiled", {}, compiled_configurations(with_deepcache=True))]
SDXL_COMPILED = [("SDXL 1024², Euler 20: compiled", dict(workloads.SDXL_1024), compiled_configurations(False))]


def one(server: Server, overrides: dict, speedkit, runs: int, warmup: int, label: str) -> dict:
    if overrides.get("hires"):
        fields = {k: v for k, v in overrides.items() if k != "hires"}
        return workloads.txt2img(server, fields, speedkit, runs, warmup, label)
    return workloads.bench(server, overrides, speedkit, runs, warmup, label)


def image_of(server: Server, overrides: dict, speedkit):
    fields = {**workloads.asuka_prompts()}
    if overrides.get("hires"):
        fields |= {k: v for k, v in overrides.items() if k != "hires"}
    else:
        fields |= workloads.txt2img_fields(overrides)
    answer = harness.http_json(
        server.url + "/sdapi/v1/txt2img", workloads.hires_request(fields, speedkit), timeout=3000
    )
    return workloads.image_and_params(answer)


def images(server: Server, name: str, overrides: dict, configurations: dict, folder: Path) -> dict:
    """One image per configuration, saved; its difference from stock and from lossless, and the
    Speedkit keys of its infotext (what the generation claims)."""
    from lib_speedkit.bench.imagediff import compare

    folder.mkdir(parents=True, exist_ok=True)
    slug = workloads.file_slug(name)
    shown, claims = {}, {}
    for label, speedkit in configurations.items():
        shown[label], params = image_of(server, overrides, speedkit)
        claims[label] = {k: str(v) for k, v in params.items() if k.startswith("Speedkit")}
        shown[label].save(folder / f"{slug}-{workloads.file_slug(label)}.png")
    return {
        label: {
            "vs_stock": compare(image, shown["stock"]).as_dict(),
            "vs_lossless": compare(image, shown["lossless"]).as_dict(),
            "claims": claims[label],
        }
        for label, image in shown.items()
    }


def measure(server: Server, name: str, overrides: dict, configurations: dict, runs: int, folder: Path) -> dict:
    if overrides.get("prompt") == "LORA":
        overrides = {**overrides, "prompt": f"{workloads.LORA_PROMPT_TAG} {workloads.asuka_prompts()['prompt']}"}
    steady = {}
    for label, speedkit in configurations.items():
        before = graph_totals(server)
        steady[label] = one(server, overrides, speedkit, runs, 1, f"{name}: {label}")
        after = graph_totals(server)  # the warm-up's captures (and compiles) included
        steady[label]["capture_seconds"] = round(after["capture_seconds"] - before["capture_seconds"], 2)
        steady[label]["compile_seconds"] = round(after["compile_seconds"] - before["compile_seconds"], 1)
    toggled = [label for label in TOGGLED if label in configurations]
    toggle = {label: [] for label in toggled}
    for _ in range(runs):
        for label in toggled:
            toggle[label].append(one(server, overrides, configurations[label], 1, 0, f"{name}: {label} (toggle)"))
    return {
        "workload": name,
        "overrides": overrides,
        "steady": steady,
        "toggle": workloads.merge(toggle),
        "images": images(server, name, overrides, configurations, folder),
    }


def measure_workload(server: Server, ns, scale: dict, workload: tuple, folder: Path) -> dict:
    """`measure` for one (name, overrides, configurations) with the script's runs (`--runs-large`
    for "large" ones) and the CPU check's scale overrides."""
    name, overrides, configurations = workload
    runs = ns.runs_large if overrides.get("large") else ns.runs
    overrides = {k: v for k, v in overrides.items() if k != "large"}
    overrides = {**overrides, **scale.get("hires" if overrides.get("hires") else "bench", {})}
    return measure(server, name, overrides, configurations, runs, folder)


def calls_and_captures(record: dict) -> str:
    captures = f"captures {record['capture_seconds']} s" if record.get("capture_seconds") else ""
    compiles = f"compiles {record['compile_seconds']} s" if record.get("compile_seconds") else ""
    return "; ".join(part for part in (deepcache_calls(record), compiles, captures) if part)


def graph_totals(server: Server) -> dict:
    """The graph cache's totals, with the compiled UNet's compile seconds so far."""
    status = harness.http_json(server.url + "/speedkit/v1/status")
    return {
        **status["cuda_graph"]["totals"],
        "compile_seconds": status["compiled_unet"].get("compile_seconds_total", 0),
    }


def deepcache_calls(record: dict) -> str:
    """Full and shallow UNet calls per run, from the bench records' generation data (if any)."""
    calls = [c for c in record.get("deepcache") or [] if c]
    return "; ".join(sorted({f"{c['full']} full / {c['shallow']} shallow" for c in calls}))


def report(results: list[dict]) -> str:
    lines = [
        "| workload | order | configuration | median (min–max) | × stock | × lossless | vs stock: max diff, PSNR "
        "| UNet calls per run | claims |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        if "error" in result:
            lines.append(f"| {result['workload']} | | | ERROR {result['error'][:300]} | | | | | |")
            continue
        stock = workloads.speed(result["steady"]["stock"])[2]
        lossless = workloads.speed(result["steady"]["lossless"])[2]
        unit = "it/s" if "sampler_its" in result["steady"]["stock"] else "s"
        for order in ("steady", "toggle"):
            for label, record in result[order].items():
                value, spread, faster = workloads.speed(record)
                image = result["images"].get(label, {})
                diff = image.get("vs_stock") or {}
                psnr = "∞" if diff.get("psnr_db") is None else f"{diff['psnr_db']:.1f} dB"
                claims = ", ".join(f"{k[9:]}: {v}" for k, v in (image.get("claims") or {}).items())
                lines.append(
                    f"| {result['workload']} | {order} | {label} | {value:.3f} {unit} ({spread}) | "
                    f"{faster / stock:.2f} | {faster / lossless:.2f} | "
                    f"{diff.get('max_abs', '')}, {psnr} | {calls_and_captures(record)} | {claims} |"
                )
    without_images = "".join(workloads.without_images_line(r) for r in results if "error" not in r)
    return "\n".join(lines) + "\n" + ("\n" + without_images if without_images else "")


def run(ns) -> int:
    setup = workloads.prepared(ns)
    if setup is None:
        return 1
    server, out, scale = setup.server, setup.out, setup.scale
    if ns.compiled:
        candidates = SDXL_COMPILED if ns.model == "sdxl" else SD15_COMPILED
    elif ns.model == "sdxl":
        candidates = SDXL_OPTIONS if ns.options else SDXL
    else:
        candidates = SD15_OPTIONS if ns.options else SD15
    chosen = [w for w in candidates if not ns.only or any(p in w[0] for p in ns.only.split(","))]
    result = {"command": server.command(), "build_seconds": setup.build_seconds, "workloads": [], "errors": []}

    def measure_one(workload: tuple) -> dict:
        return measure_workload(server, ns, scale, workload, Path(ns.images or out / "images"))

    try:
        result["startup_seconds"] = workloads.start_with_stock_attention(server)
        workloads.measure_each(out, result, [(w[0], w) for w in chosen], measure_one, report)
        result["status"] = harness.http_json(server.url + "/speedkit/v1/status")
    except Exception:  # noqa: BLE001 - keep what was measured, report the failure
        result["errors"].append(traceback.format_exc())
        print("ERROR", traceback.format_exc(), server.tail(), flush=True)
    finally:
        workloads.stop_and_save(server, out, result, report(result["workloads"]))
    return 1 if result["errors"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser, "deepcache", 7863)
    parser.add_argument("--options", action="store_true", help="N=3 with a window or a deeper branch; SD1.5: Heun")
    parser.add_argument("--compiled", action="store_true", help="the compiled UNet (#13): 512² or SDXL 1024²")
    parser.add_argument("--images", help="where the images go (default: OUT/images)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
