"""The benchmark in the WebUI: real generations with timing, and POST /speedkit/v1/bench.

Etiquette: every run holds the WebUI's queue lock (the tab through `wrap_gradio_gpu_call`, the REST
route through `queue_lock`), so it never overlaps a generation; progress goes through
`shared.state` (the tab's progress bar); the Interrupt button stops it and the runs done so far
are kept and marked; images are not saved; Speedkit's switches are restored after every run and
the WebUI's own settings are only changed through per-generation overrides.
"""

from __future__ import annotations

import os
import time
from contextlib import closing
from pathlib import Path

import torch
from modules import paths_internal, processing, shared

from ..bench import history as history_lib
from ..bench.baselines import compare_with_baselines
from ..bench.environment import environment_record
from ..bench.presets import BenchPreset
from ..bench.request import EXTENSION_ABSENT, MATRIX_SWITCHES, MatrixRow, bench_request
from ..bench.runner import MatrixEntry, RunMeasurement, run_benchmark, run_matrix
from ..bench.telemetry import SystemMemoryPeak, TelemetrySampler, open_gpu_provider, process_cpu_meter
from ..errors import SpeedkitError
from ..plan import SpeedPlan
from . import attention, hooks
from .availability import check_plan_can_run
from .exclusive import holding_the_queue
from .host_patches import patches_removed
from .options import remember_options
from .phases import synchronize, timed_phases
from .slim import environment_load_speed

HISTORY_FILE = "bench-history.jsonl"


class BenchRefused(SpeedkitError):
    """The benchmark cannot run (no model loaded, a switch unavailable, ...)."""


# --------------------------------------------------------------------------- one measured generation


def make_processing(preset: BenchPreset):
    return processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        prompt=preset.prompt,
        negative_prompt=preset.negative_prompt,
        sampler_name=preset.sampler,
        scheduler=preset.scheduler,
        steps=preset.steps,
        cfg_scale=preset.cfg_scale,
        seed=preset.seed,
        width=preset.width,
        height=preset.height,
        batch_size=preset.batch_size,
        n_iter=preset.batch_count,
        do_not_save_samples=True,
        do_not_save_grid=True,
        override_settings={"CLIP_stop_at_last_layers": preset.clip_skip},
        override_settings_restore_afterwards=True,
    )


def generate(preset: BenchPreset, plan: SpeedPlan | None) -> RunMeasurement:
    """One generation through the WebUI's own pipeline, with sampling timed and synchronised."""
    call_started = time.perf_counter()
    p = make_processing(preset)
    hooks.prepare_generation_with_plan(p, plan)
    windows: list[tuple[float, float]] = []
    info: dict = {}
    original_sample = p.sample

    def timed_sample(*args, **kwargs):
        if not windows:
            refused = hooks.activate_generation(p)
            if refused:
                raise BenchRefused(refused)
            info["attention"] = attention.current_backend_title()  # the backend this run used
        hooks.before_sampling(p)  # p.scripts is None here: what process_before_every_sampling does
        synchronize()
        start = time.perf_counter()
        try:
            return original_sample(*args, **kwargs)
        finally:
            synchronize()
            windows.append((start, time.perf_counter()))
            hooks.after_sampling(p)  # what post_sample does

    p.sample = timed_sample
    memory = SystemMemoryPeak()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    memory.start()
    restore_options = remember_options(p.override_settings)
    try:
        with closing(p), timed_phases(p) as phases:
            started = time.perf_counter()
            processed = processing.process_images(p)
            synchronize()  # GPU work still queued (restoring channels-last) belongs to this run
            total = time.perf_counter() - started
    finally:
        restore_options()
    system_peak, total_memory = memory.stop()
    torch_peaks = _torch_memory_peaks()
    if system_peak is not None:  # polled 8 times a second, it can miss a short peak the allocator saw
        system_peak = max(system_peak, torch_peaks.get("reserved_peak_mb", 0.0))
    record = hooks.last_record()
    if plan is not None and record is not None:
        info["speedkit"] = record.as_json()  # notes, applied switches, graph statistics: the record itself
    sampler_seconds = sum(end - start for start, end in windows)
    overhead = sum(record.overhead_s.values()) if plan is not None and record is not None else 0.0
    return RunMeasurement(
        sampler_seconds=sampler_seconds,
        total_seconds=total,
        phases_seconds=phases.as_json(total, sampler_seconds, overhead),
        time_taken_seconds=time.perf_counter() - call_started,
        sampling_windows=windows,
        vram_mb=torch_peaks | {"system_peak_mb": system_peak, "total_mb": total_memory},
        first_image=processed.images[0] if processed.images else None,
        interrupted=bool(shared.state.interrupted),
        info=info,
    )


def _torch_memory_peaks() -> dict:
    if not torch.cuda.is_available():
        return {}
    stats = torch.cuda.memory_stats()
    return {
        "active_peak_mb": stats.get("active_bytes.all.peak", 0) / 2**20,
        "reserved_peak_mb": stats.get("reserved_bytes.all.peak", 0) / 2**20,
    }


# --------------------------------------------------------------------------- environment and checks


def webui_environment() -> dict:
    from modules import launch_utils

    model = shared.sd_model
    info = getattr(model, "sd_checkpoint_info", None)
    opts = shared.cmd_opts
    return environment_record() | {
        "webui": {"version": launch_utils.git_tag(), "commit": launch_utils.commit_hash()},
        "attention": attention.current_backend_title(),
        "flags": {
            name: bool(getattr(opts, name, False))
            for name in ("no_half", "upcast_sampling", "medvram", "medvram_sdxl", "lowvram", "opt_channelslast")
        },
        "model": {
            "name": getattr(info, "model_name", None),
            "hash": getattr(info, "shorthash", None),
            "file_mb": round(os.path.getsize(info.filename) / 2**20)
            if info and os.path.exists(info.filename)
            else None,
            "kind": "SDXL"
            if getattr(model, "is_sdxl", False)
            else "SD1"
            if getattr(model, "is_sd1", False)
            else "other",
            "load_speed": _load_speed(info),
        },
    }


def _load_speed(info) -> dict | None:
    return environment_load_speed(getattr(info, "filename", None))


def _model_notes(preset: BenchPreset, environment: dict) -> list[str]:
    model_hash = (environment["model"]["hash"] or "")[:8]
    if preset.reference_model_hash and not model_hash.startswith(preset.reference_model_hash):
        return [
            f"model {environment['model']['name']} [{model_hash}] differs from the preset's reference model "
            f"[{preset.reference_model_hash}]: speed is comparable, images are not"
        ]
    return []


def _require_model() -> None:
    if shared.sd_model is None:
        raise BenchRefused("no checkpoint is loaded")


def _telemetry() -> TelemetrySampler:
    provider, reason = open_gpu_provider(torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return TelemetrySampler(provider, unavailable=reason, cpu_meter=process_cpu_meter())


def _progress(total_generations: int):
    shared.state.job_count = total_generations

    def report_progress(message: str) -> None:
        shared.state.textinfo = f"Speedkit bench: {message}"

    return report_progress


# --------------------------------------------------------------------------- running


def history() -> history_lib.History:
    return history_lib.History(Path(paths_internal.data_path) / "speedkit" / HISTORY_FILE)


def run_single(preset: BenchPreset, plan: SpeedPlan | None, label: str = "", compare_with: str | None = None) -> dict:
    """The preset `runs` times (after warm-up). Call with the queue lock held. `compare_with`:
    the GPU whose community results the result is set beside (default: the one it ran on)."""
    _require_model()
    if plan is not None:
        check_plan_can_run(plan)
    environment = webui_environment()
    progress = _progress((preset.warmup + preset.runs) * preset.batch_count)
    result = run_benchmark(generate, preset, plan, _telemetry(), progress, label)
    result["environment"] = environment
    used = [r["attention"] for r in result["runs"] if r.get("attention")]
    if used:
        environment["attention"] = used[-1]  # during the run (Speedkit may have switched it)
    result["notes"] += _model_notes(preset, environment)
    result["baseline"] = compare_with_baselines(
        result, compare_with or environment["gpu"].get("name"), environment["model"]["kind"] == "SD1"
    )
    history().append(result)
    return result


def matrix_entries(
    user_plan: SpeedPlan | None, custom: tuple[MatrixRow, ...] | None = None
) -> tuple[list[MatrixEntry], list[str]]:
    """The baseline, then each switch alone (or the `custom` entries), then the user's settings."""
    entries, notes = [MatrixEntry("baseline (Speedkit off)", None)], []
    switches_to_compare = list(custom) if custom else list(MATRIX_SWITCHES)
    for label, plan in switches_to_compare + ([("your settings", user_plan)] if user_plan else []):
        if plan == EXTENSION_ABSENT:
            entries.append(MatrixEntry(label, None, around=patches_removed))
            continue
        try:
            check_plan_can_run(plan)
        except SpeedkitError as error:
            notes.append(f"{label} left out: {error}")
            continue
        entries.append(MatrixEntry(label, plan))
    return entries, notes


def run_compare(
    preset: BenchPreset,
    user_plan: SpeedPlan | None,
    custom: tuple[MatrixRow, ...] | None = None,
    images: dict | None = None,
) -> dict:
    """Every switch alone (or the custom entries) and the user's settings against the baseline.
    `images` receives each row's first image by label."""
    _require_model()
    entries, notes = matrix_entries(user_plan, custom)
    progress = _progress(len(entries) * (preset.warmup + preset.runs) * preset.batch_count)
    matrix = run_matrix(generate, preset, entries, _telemetry(), progress, images)
    if any(entry.plan is not None and entry.plan.cuda_graph.enabled for entry in entries):
        notes.append(
            "CUDA graphs stay cached across the matrix's entries, as across generations (steady state); "
            "graph_captures lists the captures inside each timed run"
        )
    matrix["notes"] = notes + matrix["notes"]
    matrix["environment"] = webui_environment()
    history().append({"kind": "matrix", **matrix})
    return matrix


def bench_endpoint(body: dict):
    """POST /speedkit/v1/bench: the plan is checked once here, before the queue lock is taken."""
    from fastapi import HTTPException

    try:
        request = bench_request(body)
        if request.plan is not None:
            check_plan_can_run(request.plan)
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit bench: {error}") from None

    def run() -> dict:
        if request.matrix:
            return run_compare(request.preset, request.plan, request.entries)
        return run_single(request.preset, request.plan, request.label)

    return holding_the_queue("speedkit-bench", "speedkit bench", run, BenchRefused)
