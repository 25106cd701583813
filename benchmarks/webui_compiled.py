"""The compiled UNet (issue #13) where people generate, in a real A1111 1.10.1: every #12 workload
against stock and the lossless fast path, where the time outside sampling goes, and how long a
restarted WebUI takes to compile a known shape from its on-disk cache.

  python benchmarks/webui_compiled.py --a1111 DIR --model sd15|sdxl [--runs 5] [--runs-large 3]
         [--work DIR] [--out DIR] [--only NAMES] [--no-restart]

Models and LoRA: random-weight checkpoints, built as benchmarks/webui_workloads.py builds them.
Configurations: stock (Speedkit off, "sdp - scaled dot product"), lossless (CUDA graph +
channels-last + lean step), lossless + compiled (`compile_unet`); on Asuka 512² also compiled with
the guidance cutoff (fraction 0.5: batch-1 shapes in the second half) and, as its own workload,
with ToMe 0.5 (each against lossless with the same switch). Workloads (--model sd15): Asuka 512²
Euler 28, Asuka 512² with ToMe, 512² with the LoRA, 512² batch 4, 1024², hires fix 512→1024
(whole request through /sdapi/v1/txt2img, and without images in the answer); --model sdxl: SDXL
1024² Euler 20 with and without the LoRA. Orders and images as in benchmarks/webui_deepcache.py
(which measures): steady, toggle, one image per configuration against stock (max pixel
difference, PSNR).

Outside sampling: each bench run's phases (POST /speedkit/v1/bench's `phases_s`: conditioning, VAE
decode, the WebUI's torch_gc, the rest), medians per configuration; end-to-end it/s against
sampler it/s.

Restart: after the workloads the WebUI is stopped and started again with the same data folder;
the first compiled generation of Asuka 512² then compiles from the inductor cache under it
(`cache/speedkit-compile`): its compile + capture seconds and its whole-request seconds.

Hook profile (--profile-hooks RUNS): after the workloads, RUNS compiled Asuka 512² generations
(results.json `hook_profile_plain_runs`: phases and Speedkit's own work per hook), then RUNS more
with Speedkit's own hooks under cProfile (benchmarks/extensions/speedkit-bench-profile), in
hook-profile.txt.

Hires profile (--profile-hires RUNS): hires fix 512→1024 requests, stock and compiled, RUNS plain
(results.json `hires_profile`), then RUNS with the request's `process_images` and PNG encoding
under cProfile, in hires-profile-stock.txt and hires-profile-lossless---compiled.txt.

Outputs in --out: results.json, report.md, images/ (or --images), webui.log, hook-profile.txt,
hires-profile-*.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import webui_deepcache as deepcache  # noqa: E402  (standard library only at import time)
import webui_workloads as workloads  # noqa: E402
from webui_asuka import CUTOFF, LOSSLESS, TOME, Server, args, harness  # noqa: E402

STOCK = None
FAST = args(**LOSSLESS)
COMPILED = args(**LOSSLESS, compile_unet=True)
THREE = {"stock": STOCK, "lossless": FAST, "lossless + compiled": COMPILED}
WITH_CUTOFF = {
    **THREE,
    "lossless + cutoff 0.5": args(**LOSSLESS, **CUTOFF),
    "lossless + compiled + cutoff 0.5": args(**LOSSLESS, compile_unet=True, **CUTOFF),
}
WITH_TOME = {
    "stock": STOCK,
    "lossless": FAST,
    "lossless + ToMe 0.5": args(**LOSSLESS, **TOME),
    "lossless + compiled + ToMe 0.5": args(**LOSSLESS, compile_unet=True, **TOME),
}
SD15 = [
    ("Asuka 512², Euler 28", {}, WITH_CUTOFF),
    ("Asuka 512², ToMe", {}, WITH_TOME),
    ("512², LoRA", {"prompt": "LORA"}, THREE),
    ("512², batch 4", {"batch_size": 4, "large": True}, THREE),
    ("1024² SD1.5", {"width": 1024, "height": 1024, "large": True}, THREE),
    ("hires fix 512→1024", {"hires": True, "large": True}, THREE),
]
SDXL = [
    ("SDXL 1024², Euler 20", {**workloads.SDXL_1024, "large": True}, THREE),
    ("SDXL 1024², LoRA", {**workloads.SDXL_1024, "prompt": "LORA", "large": True}, THREE),
]
PHASES = ("conditioning", "vae_decode", "torch_gc", "speedkit", "other")


def phase_medians(record: dict) -> dict:
    """Median milliseconds per phase outside sampling over a bench record's runs."""
    runs = [phases for phases in record.get("phases") or [] if phases]
    return {name: round(1000 * statistics.median(r.get(name, 0.0) for r in runs), 1) for name in PHASES} if runs else {}


def outside_sampling_report(results: list[dict]) -> str:
    lines = [
        "| workload | configuration | sampler it/s | end-to-end it/s | end-to-end / sampler | "
        + " | ".join(f"{name} ms" for name in PHASES)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(PHASES),
    ]
    for result in results:
        for label, record in (result.get("steady") or {}).items():
            if "end_to_end_its" not in record:
                continue
            sampler = workloads.median(record["sampler_its"])
            end_to_end = workloads.median(record["end_to_end_its"])
            phases = phase_medians(record)
            lines.append(
                f"| {result['workload']} | {label} | {sampler:.2f} | {end_to_end:.2f} | {end_to_end / sampler:.1%} | "
                + " | ".join(str(phases.get(name, "")) for name in PHASES)
                + " |"
            )
    return "\n".join(lines) + "\n"


def profile_hooks(server: Server, overrides: dict, runs: int) -> dict:
    """Compiled Asuka 512² after the workloads: one warm-up, `runs` plain runs (their phases), then
    `runs` with Speedkit's own hooks under cProfile (the benchmark extension speedkit-bench-profile)."""
    workloads.bench(server, overrides, COMPILED, 1, 0, "profile: warm-up")
    plain = workloads.bench(server, overrides, COMPILED, runs, 0, "profile: compiled, plain")
    _profiled, stats = under_profile(
        server, "hooks", lambda: workloads.bench(server, overrides, COMPILED, runs, 0, "profile: compiled, profiled")
    )
    return {"plain": plain, "stats": stats}


def under_profile(server: Server, target: str, work):
    """`work()` with speedkit-bench-profile's cProfile on `target` ("hooks" or "txt2img"):
    (what it returned, the pstats text)."""
    harness.http_json(server.url + "/speedkit-bench/profile", {"on": True, "target": target})
    try:
        result = work()
    finally:
        stats = harness.http_json(server.url + "/speedkit-bench/profile", {"on": False})["stats"]
    return result, stats


def restart_from_cache(server: Server, overrides: dict) -> dict:
    """Stop the WebUI, start it again with the same data folder, and time the first compiled
    generation (its compile comes from the on-disk cache)."""
    server.stop()
    startup = workloads.start_with_stock_attention(server)
    before = deepcache.graph_totals(server)
    started = time.perf_counter()
    first = workloads.bench(server, overrides, COMPILED, 1, 0, "after a restart: compiled, first run")
    seconds = time.perf_counter() - started
    after = deepcache.graph_totals(server)
    steady = workloads.bench(server, overrides, COMPILED, 3, 0, "after a restart: compiled, steady")
    return {
        "startup_seconds": startup,
        "first_request_seconds": round(seconds, 2),
        "compile_seconds": round(after["compile_seconds"] - before["compile_seconds"], 1),
        "capture_seconds": round(after["capture_seconds"] - before["capture_seconds"], 2),
        "first": first,
        "steady": steady,
        "cache_folder": harness.http_json(server.url + "/speedkit/v1/status").get("compiled_unet", {}),
    }


def profile_hires(server: Server, overrides: dict, runs: int, out: Path) -> dict:
    """Hires fix 512→1024 through /sdapi/v1/txt2img, stock and compiled: two warm-up requests (the
    compiled ones compile), `runs` plain ones (whole-request seconds), then `runs` with the
    request's `process_images` and PNG encoding under cProfile (speedkit-bench-profile's "txt2img"
    target), written to hires-profile-<configuration>.txt as each is done."""
    measured = {}
    for label, speedkit in (("stock", STOCK), ("lossless + compiled", COMPILED)):
        plain = workloads.txt2img(server, overrides, speedkit, runs, 2, f"hires profile: {label}")
        profiled, stats = under_profile(
            server,
            "txt2img",
            lambda label=label, speedkit=speedkit: workloads.txt2img(  # only the `runs` requests it names
                server, overrides, speedkit, runs, 0, f"hires profile: {label}, profiled", without_images=False
            ),
        )
        (out / f"hires-profile-{workloads.file_slug(label)}.txt").write_text(stats)
        measured[label] = {
            "seconds": plain["seconds"],
            "seconds_without_images": plain["seconds_without_images"],
            "profiled_seconds": profiled["seconds"],
        }
    return measured


def hires_profile_report(measured: dict | None) -> str:
    if not measured:
        return ""
    parts = [
        f"{label} {workloads.median(m['seconds']):.3f} s (profiled {workloads.median(m['profiled_seconds']):.3f} s, "
        f"without images in the answer {workloads.median(m['seconds_without_images']):.3f} s)"
        for label, m in measured.items()
    ]
    return "\nHires fix 512→1024 requests before profiling: " + "; ".join(parts) + ".\n"


def plain_runs_report(record: dict | None) -> str:
    """The compiled Asuka runs after the workloads: end-to-end share, phases, Speedkit's own work per hook."""
    if not record:
        return ""
    sampler, end_to_end = workloads.median(record["sampler_its"]), workloads.median(record["end_to_end_its"])
    own = [run for run in record.get("speedkit_overhead") or [] if run]
    per_hook = {
        hook: round(1000 * statistics.median(run.get(hook, 0.0) for run in own), 1)
        for hook in sorted({hook for run in own for hook in run})
    }
    return (
        f"\nCompiled Asuka 512² after the workloads: {sampler:.2f} sampler it/s, {end_to_end:.2f} end-to-end "
        f"({end_to_end / sampler:.1%}); phases ms {phase_medians(record)}; "
        f"Speedkit's own work per hook ms {per_hook}.\n"
    )


def restart_report(record: dict) -> str:
    if not record:
        return ""
    if "error" in record:
        return f"\nRestart from the on-disk cache: ERROR {record['error'][:500]}\n"
    steady = workloads.median(record["steady"]["sampler_its"])
    return (
        f"\nRestart from the on-disk cache: WebUI started in {record['startup_seconds']:.1f} s; the first compiled "
        f"Asuka 512² generation took {record['first_request_seconds']} s, of which compile "
        f"{record['compile_seconds']} s and graph captures {record['capture_seconds']} s; then {steady:.2f} it/s.\n"
    )


def run(ns) -> int:
    setup = workloads.prepared(ns)
    if setup is None:
        return 1
    server, out, scale = setup.server, setup.out, setup.scale
    candidates = SDXL if ns.model == "sdxl" else SD15
    chosen = [w for w in candidates if not ns.only or any(p in w[0] for p in ns.only.split(","))]
    result = {"command": server.command(), "build_seconds": setup.build_seconds, "workloads": [], "errors": []}

    def measure_one(workload: tuple) -> dict:
        return deepcache.measure_workload(server, ns, scale, workload, Path(ns.images or out / "images"))

    def report() -> str:
        return (
            deepcache.report(result["workloads"])
            + "\nOutside sampling (medians of the steady runs):\n\n"
            + outside_sampling_report(result["workloads"])
            + plain_runs_report(result.get("hook_profile_plain_runs"))
            + hires_profile_report(result.get("hires_profile"))
            + restart_report(result.get("restart"))
        )

    try:
        result["startup_seconds"] = workloads.start_with_stock_attention(server)
        workloads.measure_each(out, result, [(w[0], w) for w in chosen], measure_one, deepcache.report)
        result["status"] = harness.http_json(server.url + "/speedkit/v1/status")
        if ns.profile_hooks:
            profiled = profile_hooks(server, scale.get("bench", {}), ns.profile_hooks)
            result["hook_profile_plain_runs"] = profiled["plain"]
            (out / "hook-profile.txt").write_text(profiled["stats"])
        if ns.profile_hires:
            result["hires_profile"] = profile_hires(server, scale.get("hires", {}), ns.profile_hires, out)
        if not ns.no_restart:
            try:
                result["restart"] = restart_from_cache(server, scale.get("bench", {}))
            except workloads.MEASUREMENT_ERRORS as error:
                result["restart"] = workloads.error_record("restart", error)
    except Exception:  # noqa: BLE001 - keep what was measured, report the failure
        result["errors"].append(traceback.format_exc())
        print("ERROR", traceback.format_exc(), server.tail(), flush=True)
    finally:
        workloads.stop_and_save(server, out, result, report())
        print(report(), flush=True)
    return 1 if result["errors"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    workloads.add_common_arguments(parser, "compiled", 7864)
    parser.add_argument("--images", help="where the images go (default: OUT/images)")
    parser.add_argument("--no-restart", action="store_true", help="skip the restart-from-cache measurement")
    parser.add_argument(
        "--profile-hires",
        type=int,
        default=0,
        metavar="RUNS",
        help="after the workloads, profile RUNS hires requests, stock and compiled (OUT/hires-profile-*.txt)",
    )
    parser.add_argument(
        "--profile-hooks",
        type=int,
        default=0,
        metavar="RUNS",
        help="after the workloads, profile Speedkit's hooks over RUNS compiled Asuka runs (OUT/hook-profile.txt)",
    )
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
