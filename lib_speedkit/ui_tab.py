"""Gradio 3.41 layout of the Speedkit tab (no WebUI imports; the host's callables are passed in):
run settings and switches on the left; the result card (big numbers, the diagnosis, you vs the
community) with the raw JSON folded away on the right; the switch comparison's images; the
history plot (shown once there are runs), table and compact export; the slim section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .ui import build_controls

THIS_GPU = "this GPU"
"""The "Compare with" choice that compares with the GPU the bench runs on."""


@dataclass
class BenchTabHost:
    """What the bench tab needs from the host: choices, and the callables its buttons run."""

    presets: list[str]
    backend_choices: list[str]
    unavailable: Mapping[str, str]
    accordion_cls: Any
    disabled_note: str | None
    # (task id, preset, batch size, batch count, runs, warm-up, steps, width, height, label, compare with, *switches)
    #   -> (result JSON, history table, history plot, comparison images, result HTML); the HTML is
    #   last: the WebUI's wrapper appends "Time taken" to the last output, and puts an error there
    #   after len(outputs) - 1 "extra" outputs
    run: Callable
    compare: Callable  # same arguments and outputs
    history_frame: Callable
    history_plot_frame: Callable
    export: Callable[[str], Callable[[], str]]  # "csv" | "json" -> () -> file path
    gpus: list[str] | None = None  # GPUs with community results ("Compare with")
    slim: Any = None  # ui_slim.SlimSectionHost: adds the "Slim a checkpoint" section
    # (sizes, batch sizes, *switches) -> (result JSON, report markdown): adds the "Precompile" section
    precompile: Callable | None = None
    default_mode: str = "Off"


def _slider(elem_id: str, label: str, minimum: float, maximum: float, step: float, value: float):
    return gr.Slider(label=label, minimum=minimum, maximum=maximum, step=step, value=value, elem_id=elem_id)


def _size_number(label: str, name: str):
    return gr.Number(label=f"{label} (0 = preset)", value=0, precision=0, elem_id=f"speedkit_bench_{name}")


def _run_settings(host: BenchTabHost) -> list:
    """The preset and how it runs; returned in the handlers' argument order."""
    preset = gr.Dropdown(label="Preset", choices=host.presets, value=host.presets[0], elem_id="speedkit_bench_preset")
    with gr.Row():
        batch_size = _slider("speedkit_bench_batch_size", "Batch size", 1, 8, 1, 1)
        batch_count = _slider("speedkit_bench_batch_count", "Batch count", 1, 10, 1, 1)
    with gr.Row():
        runs = _slider("speedkit_bench_runs", "Timed runs", 1, 10, 1, 3)
        warmup = _slider("speedkit_bench_warmup", "Warm-up runs", 0, 3, 1, 1)
    with gr.Row():
        steps, width, height = (
            _size_number(*n) for n in (("Steps", "steps"), ("Width", "width"), ("Height", "height"))
        )
    with gr.Row():
        label = gr.Textbox(label="Label (stored with the result)", elem_id="speedkit_bench_label")
        compare_with = gr.Dropdown(
            label="Compare with",
            choices=[THIS_GPU, *(host.gpus or [])],
            value=THIS_GPU,
            elem_id="speedkit_bench_compare_with",
        )
    return [preset, batch_size, batch_count, runs, warmup, steps, width, height, label, compare_with]


def _history(host: BenchTabHost):
    frame = host.history_plot_frame()
    with gr.Accordion("History", open=True, elem_id="speedkit_bench_history_section"):
        plot = gr.LinePlot(
            value=frame,
            x="time",
            y="sampler it/s",
            color="configuration",
            overlay_point=True,  # a configuration with one run is a point, not an invisible line
            title="Sampler it/s by run",
            x_title="time of the run",
            elem_id="speedkit_bench_plot",
            width=600,
            visible=not frame.empty,
        )
        table = gr.Dataframe(value=host.history_frame, interactive=False, elem_id="speedkit_bench_history")
        with gr.Row(elem_classes=["speedkit_export"]):
            export_csv = gr.Button("Export CSV", size="sm", scale=0, min_width=120, elem_id="speedkit_bench_export_csv")
            export_json = gr.Button(
                "Export JSON", size="sm", scale=0, min_width=120, elem_id="speedkit_bench_export_json"
            )
        export_file = gr.File(label="Export", visible=False, height=80, elem_id="speedkit_bench_export_file")
    for button, kind in ((export_csv, "csv"), (export_json, "json")):
        export = host.export(kind)
        button.click(fn=lambda export=export: gr.update(value=export(), visible=True), outputs=[export_file])
    return table, plot


PRECOMPILE_HELP = (
    "Compile UNet compiles each new size and batch size on its first generation (about a minute, "
    "seconds after a restart). Precompile runs a 2-step generation per size and batch size with the "
    "switches above plus CUDA graph and Compile UNet, so your first image is fast. Prompts up to 75 "
    "tokens; a hires fix pass at a size listed here is covered."
)


def _precompile_section(precompile: Callable, switch_inputs: list) -> None:
    with gr.Accordion("Precompile (Compile UNet)", open=False, elem_id="speedkit_precompile"):
        gr.Markdown(PRECOMPILE_HELP)
        with gr.Row():
            sizes = gr.Textbox(label="Sizes", value="512x512", elem_id="speedkit_precompile_sizes")
            batch_sizes = gr.Textbox(label="Batch sizes", value="1", elem_id="speedkit_precompile_batch_sizes")
        button = gr.Button("Precompile", elem_id="speedkit_precompile_run")
        report = gr.Markdown(elem_id="speedkit_precompile_report")
        with gr.Accordion("Raw result (JSON)", open=False, elem_id="speedkit_precompile_json_section"):
            result = gr.JSON(elem_id="speedkit_precompile_json")
    # the report last: the WebUI's wrapper appends "Time taken" to the last output
    button.click(fn=precompile, inputs=[sizes, batch_sizes, *switch_inputs], outputs=[result, report])


def build_bench_tab(host: BenchTabHost) -> gr.Blocks:
    """The Speedkit tab: preset and run settings, switches, Run / Compare, result, history, export."""
    with gr.Blocks(analytics_enabled=False) as tab:
        task_id = gr.Textbox(visible=False, elem_id="speedkit_bench_task_id")
        with gr.Row():
            with gr.Column(scale=1):
                settings = _run_settings(host)
                controls = build_controls(
                    lambda item: f"speedkit_bench_{item}",
                    host.backend_choices,
                    host.unavailable,
                    host.accordion_cls,
                    host.disabled_note,
                    host.default_mode,
                )
                with gr.Row():
                    run_button = gr.Button("Run benchmark", variant="primary", elem_id="speedkit_bench_run")
                    compare_button = gr.Button("Compare switches", elem_id="speedkit_bench_compare")
                gr.HTML(elem_id="speedkit_bench_progress")
                if host.precompile is not None:
                    _precompile_section(host.precompile, controls.inputs())
            with gr.Column(scale=2):
                result_html = gr.HTML(elem_id="speedkit_bench_result")
                images = gr.Gallery(
                    label="Baseline | the largest image difference",
                    columns=2,
                    visible=False,
                    elem_id="speedkit_bench_images",
                )
                with gr.Accordion("Raw result (JSON)", open=False, elem_id="speedkit_bench_json_section"):
                    result_json = gr.JSON(elem_id="speedkit_bench_json")
        history_table, history_plot = _history(host)
        inputs = [task_id, *settings, *controls.inputs()]
        outputs = [result_json, history_table, history_plot, images, result_html]
        for button, handler in ((run_button, host.run), (compare_button, host.compare)):
            button.click(fn=handler, _js="speedkit_bench_submit", inputs=inputs, outputs=outputs)
        if host.slim is not None:
            from .ui_slim import build_slim_section

            with gr.Accordion("Slim a checkpoint", open=False, elem_id="speedkit_slim"):
                build_slim_section(host.slim)
    return tab
