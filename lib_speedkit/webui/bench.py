"""The benchmark in the WebUI: real generations with timing, the Speedkit tab, POST /speedkit/v1/bench.

Etiquette: every run holds the WebUI's queue lock (the tab through `wrap_gradio_gpu_call`, the REST
route through `queue_lock`), so it never overlaps a generation; progress goes through
`shared.state` (the tab's progress bar); the Interrupt button stops it and the runs done so far
are kept and marked; images are not saved; Speedkit's switches are restored after every run and
the WebUI's own settings are only changed through per-generation overrides.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import closing
from pathlib import Path

import torch
from modules import call_queue, paths_internal, processing, shared

from ..bench import history as history_lib
from ..bench import report
from ..bench.baselines import compare_with_baselines
from ..bench.environment import environment_record
from ..bench.presets import PRESETS, BenchPreset, get_preset
from ..bench.runner import MatrixEntry, RunMeasurement, run_benchmark, run_matrix
from ..bench.telemetry import SystemMemoryPeak, TelemetrySampler, open_gpu_provider, process_cpu_meter
from ..errors import PlanError, SpeedkitError
from ..plan import AttentionConfig, ChannelsLastConfig, GuidanceCutoffConfig, SpeedPlan, TokenMergingConfig
from ..script_args import plan_from_args
from . import switches

HISTORY_FILE = "bench-history.jsonl"
MATRIX_SWITCHES = (
    ("attention sdp", SpeedPlan(attention=AttentionConfig("sdp"))),
    ("attention sdp-math", SpeedPlan(attention=AttentionConfig("sdp-math"))),
    ("cutoff fraction 0.75", SpeedPlan(cutoff=GuidanceCutoffConfig("fraction", 0.75))),
    ("ToMe 0.5", SpeedPlan(tome=TokenMergingConfig(ratio=0.5))),
    ("channels-last", SpeedPlan(channels_last=ChannelsLastConfig(True))),
    (
        "all together",
        SpeedPlan(
            AttentionConfig("sdp"),
            GuidanceCutoffConfig("fraction", 0.75),
            TokenMergingConfig(ratio=0.5),
            ChannelsLastConfig(True),
        ),
    ),
)


class BenchRefused(SpeedkitError):
    """The benchmark cannot run (no model loaded, a switch unavailable, ...)."""


# --------------------------------------------------------------------------- one measured generation


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
    switches.prepare_generation_with_plan(p, plan)
    windows: list[tuple[float, float]] = []
    info: dict = {}
    original_sample = p.sample

    def timed_sample(*args, **kwargs):
        if not windows:
            refused = switches.activate_generation(p)
            if refused:
                raise BenchRefused(refused)
            info["attention"] = switches.current_backend_title()  # the backend this run used
        _sync()
        start = time.perf_counter()
        try:
            return original_sample(*args, **kwargs)
        finally:
            _sync()
            windows.append((start, time.perf_counter()))

    p.sample = timed_sample
    memory = SystemMemoryPeak()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    memory.start()
    restore_options = switches.snapshot_options(p.override_settings)
    try:
        with closing(p):
            started = time.perf_counter()
            processed = processing.process_images(p)
            total = time.perf_counter() - started
    finally:
        restore_options()
    system_peak, total_memory = memory.stop()
    torch_peaks = _torch_memory_peaks()
    if system_peak is not None:  # polled 8 times a second, it can miss a short peak the allocator saw
        system_peak = max(system_peak, torch_peaks.get("reserved_peak_mb", 0.0))
    return RunMeasurement(
        sampler_seconds=sum(end - start for start, end in windows),
        total_seconds=total,
        time_taken_seconds=time.perf_counter() - call_started,
        sampling_windows=windows,
        vram_mb=torch_peaks | {"system_peak_mb": system_peak, "total_mb": total_memory},
        first_image=processed.images[0] if processed.images else None,
        interrupted=bool(shared.state.interrupted),
        info=info | {"infotext": processed.infotexts[0] if processed.infotexts else ""},
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
        "attention": switches.current_backend_title(),
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
    from .slim import environment_load_speed

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


def _sampler(preset: BenchPreset) -> TelemetrySampler:
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


def run_single(preset: BenchPreset, plan: SpeedPlan | None, label: str = "") -> dict:
    """The preset `runs` times (after warm-up). Call with the queue lock held."""
    _require_model()
    if plan is not None:
        switches.check_plan_can_run(plan)
    environment = webui_environment()
    progress = _progress((preset.warmup + preset.runs) * preset.batch_count)
    result = run_benchmark(generate, preset, plan, _sampler(preset), progress, label)
    result["environment"] = environment
    used = [r["attention"] for r in result["runs"] if r.get("attention")]
    if used:
        environment["attention"] = used[-1]  # during the run (Speedkit may have switched it)
    result["notes"] += _model_notes(preset, environment)
    result["baseline"] = compare_with_baselines(
        result, environment["gpu"].get("name"), environment["model"]["kind"] == "SD1"
    )
    history().append(result)
    return result


def matrix_entries(user_plan: SpeedPlan | None) -> tuple[list[MatrixEntry], list[str]]:
    entries, notes = [MatrixEntry("baseline (Speedkit off)", None)], []
    for label, plan in MATRIX_SWITCHES + ((("your settings", user_plan),) if user_plan else ()):
        try:
            switches.check_plan_can_run(plan)
        except SpeedkitError as error:
            notes.append(f"{label} left out: {error}")
            continue
        entries.append(MatrixEntry(label, plan))
    return entries, notes


def run_compare(preset: BenchPreset, user_plan: SpeedPlan | None) -> dict:
    """Every switch alone, all together and the user's settings against the baseline."""
    _require_model()
    entries, notes = matrix_entries(user_plan)
    progress = _progress(len(entries) * (preset.warmup + preset.runs) * preset.batch_count)
    matrix = run_matrix(generate, preset, entries, _sampler(preset), progress)
    matrix["notes"] = notes + matrix["notes"]
    matrix["environment"] = webui_environment()
    history().append({"kind": "matrix", **matrix})
    return matrix


# --------------------------------------------------------------------------- REST


def bench_request(body: dict) -> tuple[BenchPreset, SpeedPlan | None, bool, str]:
    """Validate a POST /speedkit/v1/bench body; PlanError names the bad field."""
    if not isinstance(body, dict):
        raise PlanError("body", body, "a JSON object")
    unknown = set(body) - {"preset", "overrides", "speedkit", "matrix", "label"}
    if unknown:
        raise PlanError(sorted(unknown)[0], body[sorted(unknown)[0]], "preset, overrides, speedkit, matrix, label")
    overrides = body.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise PlanError("overrides", overrides, "an object of preset fields")
    preset = get_preset(body.get("preset", "Asuka test"), overrides)
    args = body.get("speedkit")
    if args is not None and not isinstance(args, list):
        raise PlanError("speedkit", args, "the accordion's args as a list (see README), or null")
    plan = plan_from_args(args) if args else None
    matrix = body.get("matrix", False)
    if not isinstance(matrix, bool):
        raise PlanError("matrix", matrix, "true or false")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise PlanError("label", label, "a string")
    return preset, plan, matrix, label


def bench_endpoint(body: dict):
    from fastapi import HTTPException

    try:
        preset, plan, matrix, label = bench_request(body)
        if plan is not None:
            switches.check_plan_can_run(plan)
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit bench: {error}") from None
    with call_queue.queue_lock:
        shared.state.begin(job="speedkit-bench")
        try:
            return run_compare(preset, plan) if matrix else run_single(preset, plan, label)
        except BenchRefused as error:
            raise HTTPException(status_code=409, detail=f"speedkit bench: {error}") from None
        finally:
            shared.state.end()


def add_routes(_demo, app) -> None:
    app.add_api_route("/speedkit/v1/bench", bench_endpoint, methods=["POST"])


# --------------------------------------------------------------------------- the tab


def _history_frame():
    import pandas as pd

    rows = [history_lib.flat_row(r) for r in history().read().results if r.get("kind") != "matrix"]
    frame = pd.DataFrame(rows, columns=history_lib.CSV_COLUMNS)
    return frame[
        [
            "timestamp",
            "label",
            "preset",
            "gpu",
            "attention",
            "sampler_its_median",
            "end_to_end_its_median",
            "gpu_util_mean",
            "vram_reserved_peak_mb",
            "interrupted",
        ]
    ]


def _history_plot_frame():
    import pandas as pd

    frame = _history_frame()
    if frame.empty:
        return pd.DataFrame({"run": [], "sampler it/s": [], "configuration": []})
    return pd.DataFrame(
        {
            "run": range(1, len(frame) + 1),
            "sampler it/s": pd.to_numeric(frame["sampler_its_median"], errors="coerce"),
            "configuration": (frame["preset"].astype(str) + " " + frame["label"].astype(str)).str.strip(),
        }
    )


def _tab_preset(name, batch_size, batch_count, runs, warmup, steps, width, height) -> BenchPreset:
    overrides = {"batch_size": batch_size, "batch_count": batch_count, "runs": runs, "warmup": warmup}
    for field_name, value in (("steps", steps), ("width", width), ("height", height)):
        if value:
            overrides[field_name] = value
    return get_preset(name, overrides)


def _tab_run(compare: bool):
    def handler(_task_id, name, batch_size, batch_count, runs, warmup, steps, width, height, label, *switch_args):
        preset = _tab_preset(name, batch_size, batch_count, runs, warmup, steps, width, height)
        plan = plan_from_args(switch_args)
        if compare:
            matrix = run_compare(preset, plan)
            return matrix, _history_frame(), _history_plot_frame(), report.matrix_to_html(matrix)
        result = run_single(preset, plan, label or "")
        return result, _history_frame(), _history_plot_frame(), report.to_html(result)

    return handler


def _export(kind: str):
    def export():
        results = history().read().results
        text = history_lib.to_csv(results) if kind == "csv" else history_lib.to_json(results)
        path = Path(tempfile.mkdtemp(prefix="speedkit-export-")) / f"speedkit-bench-history.{kind}"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return export


def slim_section_host():
    from .. import ui_slim
    from . import slim

    return ui_slim.SlimSectionHost(
        checkpoints=slim.checkpoint_choices,
        vaes=slim.vae_choices,
        run=call_queue.wrap_gradio_gpu_call(slim.tab_handler, extra_outputs=[None, []]),
        unsafe_default=bool(getattr(shared.cmd_opts, "disable_safe_unpickle", False)),
    )


def create_tab():
    """on_ui_tabs: the Speedkit tab (layout in lib_speedkit.ui)."""
    import gradio as gr
    from modules.ui_components import InputAccordion

    from .. import ui

    def wrapped(compare: bool):
        return call_queue.wrap_gradio_gpu_call(_tab_run(compare), extra_outputs=[gr.update()] * 3)

    tab = ui.build_bench_tab(
        ui.BenchTabHost(
            presets=list(PRESETS),
            backend_choices=switches.backend_choices(),
            unavailable=switches.unavailable_backends(),
            accordion_cls=InputAccordion,
            disabled_note=switches.FORGE_NOTE if switches.is_forge() else None,
            run=wrapped(False),
            compare=wrapped(True),
            history_frame=_history_frame,
            history_plot_frame=_history_plot_frame,
            export=_export,
            slim=slim_section_host(),
        )
    )
    return [(tab, "Speedkit", "speedkit")]


def install() -> None:
    """Register the tab and the REST route (scripts/speedkit.py calls this at import)."""
    from modules import script_callbacks

    script_callbacks.on_ui_tabs(create_tab, name="speedkit_tab")
    script_callbacks.on_app_started(add_routes, name="speedkit_bench_routes")
    from . import slim

    script_callbacks.on_app_started(slim.add_routes, name="speedkit_slim_routes")
