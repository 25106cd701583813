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
from dataclasses import dataclass
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
from ..plan import (
    AttentionConfig,
    ChannelsLastConfig,
    CudaGraphConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
    SpeedPlan,
    TokenMergingConfig,
)
from ..script_args import plan_from_args
from . import switches

HISTORY_FILE = "bench-history.jsonl"
MATRIX_SWITCHES = (
    ("attention sdp", SpeedPlan(attention=AttentionConfig("sdp"))),
    ("attention sdp-math", SpeedPlan(attention=AttentionConfig("sdp-math"))),
    ("cutoff fraction 0.75", SpeedPlan(cutoff=GuidanceCutoffConfig("fraction", 0.75))),
    ("ToMe 0.5", SpeedPlan(tome=TokenMergingConfig(ratio=0.5))),
    ("channels-last", SpeedPlan(channels_last=ChannelsLastConfig(True))),
    ("CUDA graph", SpeedPlan(cuda_graph=CudaGraphConfig(True))),
    ("lean step", SpeedPlan(lean_step=LeanStepConfig(True))),
    (
        "fast path (sdp, CUDA graph, channels-last, lean step)",
        SpeedPlan(
            AttentionConfig("sdp"),
            channels_last=ChannelsLastConfig(True),
            cuda_graph=CudaGraphConfig(True),
            lean_step=LeanStepConfig(True),
        ),
    ),
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
        switches.before_sampling(p)  # p.scripts is None here: what process_before_every_sampling does
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
    graph_record = switches.STATE.last.cuda_graph if switches.STATE.last is not None else None
    if graph_record:
        info["graph_captures"] = graph_record["captures"]
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


def matrix_entries(
    user_plan: SpeedPlan | None, custom: list[tuple[str, SpeedPlan]] | None = None
) -> tuple[list[MatrixEntry], list[str]]:
    """The baseline, then each switch alone (or the `custom` entries), then the user's settings."""
    entries, notes = [MatrixEntry("baseline (Speedkit off)", None)], []
    switches_to_compare = list(custom) if custom else list(MATRIX_SWITCHES)
    for label, plan in switches_to_compare + ([("your settings", user_plan)] if user_plan else []):
        if plan == EXTENSION_ABSENT:
            entries.append(MatrixEntry(label, None, around=switches.patches_removed))
            continue
        try:
            switches.check_plan_can_run(plan)
        except SpeedkitError as error:
            notes.append(f"{label} left out: {error}")
            continue
        entries.append(MatrixEntry(label, plan))
    return entries, notes


def run_compare(
    preset: BenchPreset, user_plan: SpeedPlan | None, custom: list[tuple[str, SpeedPlan]] | None = None
) -> dict:
    """Every switch alone (or the custom entries) and the user's settings against the baseline."""
    _require_model()
    entries, notes = matrix_entries(user_plan, custom)
    progress = _progress(len(entries) * (preset.warmup + preset.runs) * preset.batch_count)
    switches.STATE.keep_graphs = True  # steady state: entries without the fast path do not drop its graphs
    try:
        matrix = run_matrix(generate, preset, entries, _sampler(preset), progress)
    finally:
        switches.STATE.keep_graphs = False
        switches.release_graphs()
    if any(entry.plan is not None and entry.plan.cuda_graph.enabled for entry in entries):
        notes.append(
            "CUDA graphs stay cached across the matrix's entries (steady state, as in consecutive generations "
            "with the switch on); graph_captures lists the captures inside each timed run"
        )
    matrix["notes"] = notes + matrix["notes"]
    matrix["environment"] = webui_environment()
    history().append({"kind": "matrix", **matrix})
    return matrix


# --------------------------------------------------------------------------- REST


EXTENSION_ABSENT = "extension-absent"
"""A custom matrix entry's `speedkit` value: Speedkit off AND its patches taken out, to measure
what the installed extension costs with every switch off."""
BODY_FIELDS = ("preset", "overrides", "speedkit", "matrix", "entries", "label")


@dataclass(frozen=True)
class BenchRequest:
    preset: BenchPreset
    plan: SpeedPlan | None
    matrix: bool
    label: str
    entries: list[tuple[str, SpeedPlan]] | None = None  # custom matrix rows (matrix only)


def matrix_entries_from_body(value: object) -> list[tuple[str, SpeedPlan]] | None:
    """`entries`: [{"label": "...", "speedkit": [args]}, ...] -> (label, plan) pairs."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PlanError("entries", value, 'a non-empty list of {"label": ..., "speedkit": [args]}')
    parsed, labels = [], set()
    for index, item in enumerate(value):
        where = f"entries[{index}]"
        if not isinstance(item, dict) or set(item) != {"label", "speedkit"}:
            raise PlanError(where, item, 'an object with "label" and "speedkit"')
        label, args = item["label"], item["speedkit"]
        if not isinstance(label, str) or not label or label in labels:
            raise PlanError(f"{where}.label", label, "a unique, non-empty string")
        labels.add(label)
        if args == EXTENSION_ABSENT:
            parsed.append((label, EXTENSION_ABSENT))
            continue
        if not isinstance(args, list) or not args or args[0] is not True:
            raise PlanError(
                f"{where}.speedkit", args, f'the accordion\'s args with enabled = true, or "{EXTENSION_ABSENT}"'
            )
        try:
            parsed.append((label, plan_from_args(args)))
        except PlanError as error:
            raise PlanError(f"{where}.speedkit {error.field}", error.value, error.allowed) from None
    return parsed


def bench_request(body: dict) -> BenchRequest:
    """Validate a POST /speedkit/v1/bench body; PlanError names the bad field."""
    if not isinstance(body, dict):
        raise PlanError("body", body, "a JSON object")
    unknown = set(body) - set(BODY_FIELDS)
    if unknown:
        raise PlanError(sorted(unknown)[0], body[sorted(unknown)[0]], ", ".join(BODY_FIELDS))
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
    entries = matrix_entries_from_body(body.get("entries"))
    if entries is not None and not matrix:
        raise PlanError("entries", body["entries"], 'only with "matrix": true')
    return BenchRequest(preset, plan, matrix, label, entries)


def bench_endpoint(body: dict):
    from fastapi import HTTPException

    try:
        request = bench_request(body)
        if request.plan is not None:
            switches.check_plan_can_run(request.plan)
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit bench: {error}") from None
    with call_queue.queue_lock:
        shared.state.begin(job="speedkit-bench")
        try:
            if request.matrix:
                return run_compare(request.preset, request.plan, request.entries)
            return run_single(request.preset, request.plan, request.label)
        except BenchRefused as error:
            raise HTTPException(status_code=409, detail=f"speedkit bench: {error}") from None
        finally:
            shared.state.end()


def add_routes(_demo, app) -> None:
    from .access import add_route

    add_route(app, "/speedkit/v1/bench", bench_endpoint, ["POST"], needs_api=True)


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
        unsafe_blocked=slim.tab_may_allow_unsafe_pickles(),
        webui_unsafe=slim.webui_allows_unsafe_pickles(),
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
