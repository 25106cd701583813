"""The Speedkit tab: its handlers (run, compare, history, export) and the slim section's host.
Layout: lib_speedkit.ui_tab and lib_speedkit.ui_slim (no WebUI imports there)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
from modules import call_queue

from .. import ui_slim, ui_tab
from ..bench import cards
from ..bench import history as history_lib
from ..bench.presets import PRESETS, BenchPreset, get_preset
from ..script_args import plan_from_args
from ..ui_tab import THIS_GPU
from . import attention, availability, bench, options, precompile, slim


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
    """One point per run: when it ran, its sampler it/s, and its configuration (preset, size,
    attention, Speedkit switches) as the series."""
    import pandas as pd

    rows = [history_lib.flat_row(r) for r in bench.history().read().results if r.get("kind") != "matrix"]
    if not rows:  # typed columns: the plot's schema is read from them even when it is hidden
        return pd.DataFrame(
            {
                "time": pd.to_datetime(pd.Series([], dtype=str), utc=True),
                "sampler it/s": pd.Series([], dtype=float),
                "configuration": pd.Series([], dtype=str),
            }
        )
    frame = pd.DataFrame(rows, columns=history_lib.CSV_COLUMNS)
    configuration = frame["preset"].astype(str) + " · " + frame["attention"].astype(str)
    configuration += frame["speedkit"].map(_switches_text)
    return pd.DataFrame(
        {
            "time": pd.to_datetime(frame["timestamp"], errors="coerce", utc=True),
            "sampler it/s": pd.to_numeric(frame["sampler_its_median"], errors="coerce"),
            "configuration": configuration,
        }
    )


def _switches_text(speedkit_json: object) -> str:
    """A history row's Speedkit switches for a legend: " · mode Lossless, CUDA graph True"."""
    try:
        entries = json.loads(str(speedkit_json))
    except ValueError:
        return ""
    return (
        " · " + ", ".join(f"{key.removeprefix('Speedkit ')} {value}" for key, value in entries.items())
        if entries
        else ""
    )


def _history_outputs():
    plot = _history_plot_frame()
    return _history_frame(), gr.update(value=plot, visible=not plot.empty)


def _tab_preset(name, batch_size, batch_count, runs, warmup, steps, width, height) -> BenchPreset:
    overrides = {"batch_size": batch_size, "batch_count": batch_count, "runs": runs, "warmup": warmup}
    for field_name, value in (("steps", steps), ("width", width), ("height", height)):
        if value:
            overrides[field_name] = value
    return get_preset(name, overrides)


def _run(preset: BenchPreset, plan, label: str, compare_with: str):
    result = bench.run_single(preset, plan, label or "", None if compare_with == THIS_GPU else compare_with)
    card = cards.result_card_html(result, cards.community_chart_html(result))
    return (result, *_history_outputs(), gr.update(value=None, visible=False), card)


def _compare(preset: BenchPreset, plan):
    images: dict = {}
    matrix = bench.run_compare(preset, plan, images=images)
    largest = cards.largest_difference(matrix)
    baseline = matrix["rows"][0]["label"] if matrix["rows"] else None
    shown = [(images[label], label) for label in (baseline, largest) if largest and images.get(label) is not None]
    gallery = gr.update(value=shown or None, visible=bool(shown))
    return (matrix, *_history_outputs(), gallery, cards.matrix_chart_html(matrix))


def _tab_run(compare: bool):
    def handler(
        _task_id, name, batch_size, batch_count, runs, warmup, steps, width, height, label, compare_with, *args
    ):
        preset = _tab_preset(name, batch_size, batch_count, runs, warmup, steps, width, height)
        plan = plan_from_args(args, unavailable=availability.unavailable_switches())
        return _compare(preset, plan) if compare else _run(preset, plan, label, compare_with)

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
    """on_ui_tabs: the Speedkit tab (layout in lib_speedkit.ui_tab)."""
    from modules.ui_components import InputAccordion

    def wrapped(compare: bool):
        return call_queue.wrap_gradio_gpu_call(_tab_run(compare), extra_outputs=[gr.update()] * 4)

    tab = ui_tab.build_bench_tab(
        ui_tab.BenchTabHost(
            presets=list(PRESETS),
            backend_choices=attention.backend_choices(),
            unavailable=availability.unavailable_switches(),
            accordion_cls=InputAccordion,
            disabled_note=attention.FORGE_NOTE if attention.is_forge() else None,
            run=wrapped(False),
            compare=wrapped(True),
            history_frame=_history_frame,
            history_plot_frame=_history_plot_frame,
            export=_export,
            gpus=cards.gpu_choices(),
            slim=slim_section_host(),
            precompile=call_queue.wrap_gradio_gpu_call(precompile.tab_handler, extra_outputs=[None]),
            default_mode=options.default_mode(),
        )
    )
    return [(tab, "Speedkit", "speedkit")]
