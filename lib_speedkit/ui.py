"""Gradio 3.41 components of the Speedkit accordion (txt2img and img2img). No WebUI imports:
the host's InputAccordion and PasteField classes are passed in by scripts/speedkit.py.

Components are created in SCRIPT_ARGS order, which is the order of the API's positional args.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from .plan import CUTOFF_MODES, INFOTEXT_PREFIX, TOME_DOWNSAMPLES, TOME_MAX_RATIO, TOME_MAX_STRIDE, parse_infotext
from .script_args import ARG_NAMES, DEFAULT_ARGS, args_from_plan

CUTOFF_VALUE_LABELS = {
    "off": "Cutoff value (unused while off)",
    "sigma": "Skip the negative pass below this sigma",
    "fraction": "Skip the negative pass from this fraction of the steps on",
    "adaptive": "Skip once cond/uncond similarity reaches τ",
}


@dataclass
class SwitchControls:
    """The accordion's input components, in SCRIPT_ARGS order."""

    enabled: gr.components.Component
    attention: gr.components.Component
    cutoff_mode: gr.components.Component
    cutoff_value: gr.components.Component
    tome_ratio: gr.components.Component
    tome_hr_ratio: gr.components.Component
    tome_max_downsample: gr.components.Component
    tome_sx: gr.components.Component
    tome_sy: gr.components.Component
    tome_random: gr.components.Component
    tome_seed: gr.components.Component
    channels_last: gr.components.Component
    cuda_graph: gr.components.Component
    lean_step: gr.components.Component

    def inputs(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


assert tuple(f.name for f in fields(SwitchControls)) == ARG_NAMES, "SwitchControls must follow SCRIPT_ARGS"


def _slider(elem_id: str, label: str, minimum: float, maximum: float, step: float, value: float):
    return gr.Slider(label=label, minimum=minimum, maximum=maximum, step=step, value=value, elem_id=elem_id)


def default(name: str):
    return DEFAULT_ARGS[ARG_NAMES.index(name)]


def unavailable_note_html(unavailable: Mapping[str, str]) -> str:
    """A visible list of the backends that cannot run here, with the reasons (also read by the JS)."""
    if not unavailable:
        return ""
    items = "".join(f"<li><code>{html.escape(n)}</code>: {html.escape(r)}</li>" for n, r in unavailable.items())
    data = html.escape(json.dumps(dict(unavailable)), quote=True)
    return (
        f"<div class='speedkit_unavailable' data-speedkit-unavailable=\"{data}\">"
        f"<details><summary>Unavailable here ({len(unavailable)})</summary><ul>{items}</ul></details></div>"
    )


def build_controls(
    elem_id: Callable[[str], str],
    backend_choices: list[str],
    unavailable: Mapping[str, str],
    accordion_cls,
    disabled_note: str | None = None,
) -> SwitchControls:
    """Create the accordion and its controls (call inside the script's ui())."""
    with accordion_cls(False, label="Speedkit", elem_id=elem_id("enabled")) as enabled:
        with gr.Row(elem_classes=["speedkit_row"]):
            attention = gr.Dropdown(
                label="Attention backend",
                choices=backend_choices,
                value=default("attention"),
                elem_id=elem_id("attention"),
                interactive=disabled_note is None,
                info="keep = the backend set in Settings → Optimizations",
            )
            channels_last = gr.Checkbox(
                label="Channels-last UNet", value=default("channels_last"), elem_id=elem_id("channels_last")
            )
        with gr.Row(elem_classes=["speedkit_row"]):
            cuda_graph = gr.Checkbox(
                label="CUDA graph (fast path)",
                value=default("cuda_graph"),
                elem_id=elem_id("cuda_graph"),
                info="replays the UNet; lossless; keeps ~1 UNet call of VRAM; eager with LoRA",
            )
            lean_step = gr.Checkbox(
                label="Lean step",
                value=default("lean_step"),
                elem_id=elem_id("lean_step"),
                info="skip the Lora built-in's layer wrappers while no LoRA is loaded; lossless",
            )
        gr.HTML(
            value=unavailable_note_html(unavailable)
            + (f"<p>{html.escape(disabled_note)}</p>" if disabled_note else ""),
            elem_id=elem_id("unavailable"),
        )
        with gr.Row(elem_classes=["speedkit_row"]):
            cutoff_mode = gr.Dropdown(
                label="Negative-guidance cutoff",
                choices=list(CUTOFF_MODES),
                value=default("cutoff_mode"),
                elem_id=elem_id("cutoff_mode"),
                interactive=disabled_note is None,
            )
            cutoff_value = gr.Number(
                label=CUTOFF_VALUE_LABELS["off"], value=default("cutoff_value"), elem_id=elem_id("cutoff_value")
            )
        with gr.Row(elem_classes=["speedkit_row"]):
            tome_ratio = _slider(
                elem_id("tome_ratio"), "ToMe ratio (0 = off)", 0.0, TOME_MAX_RATIO, 0.05, default("tome_ratio")
            )
            tome_hr_ratio = _slider(
                elem_id("tome_hr_ratio"),
                "ToMe ratio, hires pass (0 = same)",
                0.0,
                TOME_MAX_RATIO,
                0.05,
                default("tome_hr_ratio"),
            )
        with gr.Row(elem_classes=["speedkit_row"]):
            tome_max_downsample = gr.Dropdown(
                label="ToMe max downsample",
                choices=[str(d) for d in TOME_DOWNSAMPLES],
                value=str(default("tome_max_downsample")),
                elem_id=elem_id("tome_max_downsample"),
            )
            tome_sx = _slider(elem_id("tome_sx"), "ToMe stride x", 1, TOME_MAX_STRIDE, 1, default("tome_sx"))
            tome_sy = _slider(elem_id("tome_sy"), "ToMe stride y", 1, TOME_MAX_STRIDE, 1, default("tome_sy"))
            tome_random = gr.Checkbox(label="ToMe random", value=default("tome_random"), elem_id=elem_id("tome_random"))
            tome_seed = gr.Number(
                label="ToMe seed (-1 = image seed)",
                value=default("tome_seed"),
                precision=0,
                elem_id=elem_id("tome_seed"),
            )
    cutoff_mode.change(
        fn=lambda mode: gr.update(label=CUTOFF_VALUE_LABELS.get(mode, "")),
        inputs=[cutoff_mode],
        outputs=[cutoff_value],
        show_progress=False,
    )
    return SwitchControls(
        enabled,
        attention,
        cutoff_mode,
        cutoff_value,
        tome_ratio,
        tome_hr_ratio,
        tome_max_downsample,
        tome_sx,
        tome_sy,
        tome_random,
        tome_seed,
        channels_last,
        cuda_graph,
        lean_step,
    )


def has_speedkit_keys(params: Mapping[str, object]) -> bool:
    return any(isinstance(key, str) and key.startswith(INFOTEXT_PREFIX) for key in params)


def pasted_value(name: str, params: Mapping[str, object]):
    """The value of script arg `name` for pasted infotext; None (= leave as is) without Speedkit keys."""
    if name == "enabled":
        return has_speedkit_keys(params)
    if not has_speedkit_keys(params):
        return None
    value = args_from_plan(parse_infotext(params).plan)[ARG_NAMES.index(name)]
    return str(value) if name == "tome_max_downsample" else value


def paste_fields(controls: SwitchControls, paste_field_cls) -> list:
    """infotext_fields entries: pasting an image's parameters restores the accordion."""
    return [
        paste_field_cls(component, lambda params, name=name: pasted_value(name, params))
        for name, component in zip(ARG_NAMES, controls.inputs(), strict=True)
    ]


@dataclass
class BenchTabHost:
    """What the bench tab needs from the host: choices, and the callables its buttons run."""

    presets: list[str]
    backend_choices: list[str]
    unavailable: Mapping[str, str]
    accordion_cls: Any
    disabled_note: str | None
    run: Callable  # (task id, preset, batch size, batch count, runs, warm-up, steps, width, height, label, *switches)
    compare: Callable  # same arguments; -> (result JSON, history frame, plot frame, HTML)
    history_frame: Callable
    history_plot_frame: Callable
    export: Callable[[str], Callable[[], str]]  # "csv" | "json" -> () -> file path
    slim: Any = None  # ui_slim.SlimSectionHost: adds the "Slim a checkpoint" section


def _size_number(label: str, name: str):
    return gr.Number(label=f"{label} (0 = preset)", value=0, precision=0, elem_id=f"speedkit_bench_{name}")


def build_bench_tab(host: BenchTabHost) -> gr.Blocks:
    """The Speedkit tab: preset and run settings, switches, Run / Compare, result, history, export."""
    with gr.Blocks(analytics_enabled=False) as tab:
        task_id = gr.Textbox(visible=False, elem_id="speedkit_bench_task_id")
        with gr.Row():
            with gr.Column(scale=1):
                preset = gr.Dropdown(
                    label="Preset", choices=host.presets, value=host.presets[0], elem_id="speedkit_bench_preset"
                )
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
                label = gr.Textbox(label="Label (stored with the result)", elem_id="speedkit_bench_label")
                controls = build_controls(
                    lambda item: f"speedkit_bench_{item}",
                    host.backend_choices,
                    host.unavailable,
                    host.accordion_cls,
                    host.disabled_note,
                )
                with gr.Row():
                    run_button = gr.Button("Run benchmark", variant="primary", elem_id="speedkit_bench_run")
                    compare_button = gr.Button("Compare switches", elem_id="speedkit_bench_compare")
                gr.HTML(elem_id="speedkit_bench_progress")
            with gr.Column(scale=2):
                result_html = gr.HTML(elem_id="speedkit_bench_result")
                result_json = gr.JSON(label="Result (JSON)", elem_id="speedkit_bench_json")
        history_plot = gr.LinePlot(
            value=host.history_plot_frame,
            x="run",
            y="sampler it/s",
            color="configuration",
            title="History: sampler it/s",
            elem_id="speedkit_bench_plot",
            width=600,
        )
        history_table = gr.Dataframe(
            value=host.history_frame, label="History", interactive=False, elem_id="speedkit_bench_history"
        )
        with gr.Row():
            export_csv = gr.Button("Export CSV", elem_id="speedkit_bench_export_csv")
            export_json = gr.Button("Export JSON", elem_id="speedkit_bench_export_json")
            export_file = gr.File(label="Export", elem_id="speedkit_bench_export_file")
        inputs = [task_id, preset, batch_size, batch_count, runs, warmup, steps, width, height, label]
        outputs = [result_json, history_table, history_plot, result_html]
        for button, handler in ((run_button, host.run), (compare_button, host.compare)):
            button.click(fn=handler, _js="speedkit_bench_submit", inputs=inputs + controls.inputs(), outputs=outputs)
        export_csv.click(fn=host.export("csv"), outputs=[export_file])
        export_json.click(fn=host.export("json"), outputs=[export_file])
        if host.slim is not None:
            from .ui_slim import build_slim_section

            with gr.Accordion("Slim a checkpoint", open=False, elem_id="speedkit_slim"):
                build_slim_section(host.slim)
    return tab
