"""The Speedkit tab: its handlers (run, compare, history, export) and the slim section's host.
Layout: lib_speedkit.ui and lib_speedkit.ui_slim (no WebUI imports there)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from modules import call_queue

from .. import ui, ui_slim
from ..bench import history as history_lib
from ..bench import report
from ..bench.presets import PRESETS, BenchPreset, get_preset
from ..script_args import plan_from_args
from . import attention, bench, slim


def _history_frame():
    import pandas as pd

    rows = [history_lib.flat_row(r) for r in bench.history().read().results if r.get("kind") != "matrix"]
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
            matrix = bench.run_compare(preset, plan)
            return matrix, _history_frame(), _history_plot_frame(), report.matrix_to_html(matrix)
        result = bench.run_single(preset, plan, label or "")
        return result, _history_frame(), _history_plot_frame(), report.to_html(result)

    return handler


def _export(kind: str):
    """The whole history as a file for the download box; one file per kind, rewritten each click
    (nothing piles up in the temp folder)."""

    def export():
        results = bench.history().read().results
        text = history_lib.to_csv(results) if kind == "csv" else history_lib.to_json(results)
        path = Path(tempfile.gettempdir()) / "speedkit-export" / f"speedkit-bench-history.{kind}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    return export


def slim_section_host() -> ui_slim.SlimSectionHost:
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

    def wrapped(compare: bool):
        return call_queue.wrap_gradio_gpu_call(_tab_run(compare), extra_outputs=[gr.update()] * 3)

    tab = ui.build_bench_tab(
        ui.BenchTabHost(
            presets=list(PRESETS),
            backend_choices=attention.backend_choices(),
            unavailable=attention.unavailable_switches(),
            accordion_cls=InputAccordion,
            disabled_note=attention.FORGE_NOTE if attention.is_forge() else None,
            run=wrapped(False),
            compare=wrapped(True),
            history_frame=_history_frame,
            history_plot_frame=_history_plot_frame,
            export=_export,
            slim=slim_section_host(),
        )
    )
    return [(tab, "Speedkit", "speedkit")]
