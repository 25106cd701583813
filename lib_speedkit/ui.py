"""Gradio 3.41 components of the Speedkit accordion (txt2img and img2img) and the bench tab. No
WebUI imports: the host's InputAccordion and PasteField classes are passed in by the adapter.

The accordion's controls are made from script_args.SCRIPT_ARGS (label, widget, choices, range,
default) and returned in its order, which is the order of the API's positional args.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .plan import INFOTEXT_PREFIX, parse_infotext
from .script_args import ARG_NAMES, ARGS_BY_NAME, SCRIPT_ARGS, ScriptArg, args_by_name_from_plan

CUTOFF_VALUE_LABELS = {
    "off": "Cutoff value (unused while off)",
    "sigma": "Skip the negative pass below this sigma",
    "fraction": "Skip the negative pass from this fraction of the steps on",
    "adaptive": "Skip once cond/uncond similarity reaches τ",
}
ROWS = ("attention", "fast path", "cutoff", "tome", "tome options")
"""The accordion's rows, top to bottom; the unavailable-backend note follows the fast-path row."""
READ_ONLY_UNDER_NOTE = ("attention", "cutoff_mode")
"""Controls a disabled note (Forge) makes read-only."""


@dataclass
class SwitchControls:
    """The accordion's input components by argument name, and its paste warning."""

    components: dict[str, gr.components.Component]
    paste_warning: gr.components.Component | None = None

    def __getattr__(self, name: str) -> gr.components.Component:
        try:
            return self.__dict__["components"][name]
        except KeyError:
            raise AttributeError(name) from None

    def inputs(self) -> list:
        """The components in API order (ARG_NAMES)."""
        return [self.components[name] for name in ARG_NAMES]


def _slider(elem_id: str, label: str, minimum: float, maximum: float, step: float, value: float):
    return gr.Slider(label=label, minimum=minimum, maximum=maximum, step=step, value=value, elem_id=elem_id)


def default(name: str):
    return ARGS_BY_NAME[name].default


def control_value(arg: ScriptArg, value: object) -> object:
    """A script arg's value as its control holds it (dropdowns of numbers hold text)."""
    return str(value) if arg.widget == "dropdown" and arg.kind is int else value


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


def _control(arg: ScriptArg, elem_id: str, backend_choices: list[str], read_only: bool):
    """One control made from its ScriptArg."""
    common = {"label": arg.label, "elem_id": elem_id}
    if arg.info:
        common["info"] = arg.info
    if read_only:
        common["interactive"] = False
    if arg.widget == "dropdown":
        choices = backend_choices if arg.name == "attention" else [str(c) for c in arg.choices]
        return gr.Dropdown(choices=choices, value=control_value(arg, arg.default), **common)
    if arg.widget == "checkbox":
        return gr.Checkbox(value=arg.default, **common)
    if arg.widget == "slider":
        low, high = arg.bounds
        return gr.Slider(minimum=low, maximum=high, step=arg.step, value=arg.default, **common)
    if arg.name == "cutoff_value":
        common["label"] = CUTOFF_VALUE_LABELS["off"]
    return gr.Number(value=arg.default, precision=0 if arg.kind is int else None, **common)


def build_controls(
    elem_id: Callable[[str], str],
    backend_choices: list[str],
    unavailable: Mapping[str, str],
    accordion_cls,
    disabled_note: str | None = None,
) -> SwitchControls:
    """Create the accordion and its controls (call inside the script's ui())."""
    components: dict[str, gr.components.Component] = {}
    enabled_arg = ARGS_BY_NAME["enabled"]
    with accordion_cls(enabled_arg.default, label=enabled_arg.label, elem_id=elem_id("enabled")) as enabled:
        components["enabled"] = enabled
        for row in ROWS:
            with gr.Row(elem_classes=["speedkit_row"]):
                for arg in (a for a in SCRIPT_ARGS if a.row == row):
                    read_only = disabled_note is not None and arg.name in READ_ONLY_UNDER_NOTE
                    components[arg.name] = _control(arg, elem_id(arg.name), backend_choices, read_only)
            if row == "fast path":
                note = f"<p>{html.escape(disabled_note)}</p>" if disabled_note else ""
                gr.HTML(value=unavailable_note_html(unavailable) + note, elem_id=elem_id("unavailable"))
        paste_warning = gr.HTML(value="", elem_id=elem_id("paste_warning"))
    components["cutoff_mode"].change(
        fn=lambda mode: gr.update(label=CUTOFF_VALUE_LABELS.get(mode, "")),
        inputs=[components["cutoff_mode"]],
        outputs=[components["cutoff_value"]],
        show_progress=False,
    )
    return SwitchControls(components, paste_warning)


def has_speedkit_keys(params: Mapping[str, object]) -> bool:
    return any(isinstance(key, str) and key.startswith(INFOTEXT_PREFIX) for key in params)


class PastedPlan:
    """What one paste sets: every control (defaults where the infotext has no Speedkit keys) and
    the Speedkit keys that could not be read. The WebUI calls one function per control with the
    same parameters, so the infotext is parsed once per paste, not once per control."""

    def __init__(self) -> None:
        self._params: object = None
        self._values: dict[str, object] = {}
        self._problems: tuple[str, ...] = ()

    def _read(self, params: Mapping[str, object]) -> None:
        if params is self._params:
            return
        parsed = parse_infotext(params)
        values = args_by_name_from_plan(parsed.plan)
        values["enabled"] = has_speedkit_keys(params)
        self._params = params
        self._values = {arg.name: control_value(arg, values[arg.name]) for arg in SCRIPT_ARGS}
        self._problems = parsed.problems

    def value(self, name: str, params: Mapping[str, object]):
        self._read(params)
        return self._values[name]

    def warning(self, params: Mapping[str, object]) -> str:
        """Visible under the accordion: the Speedkit keys this version could not use (left at default)."""
        self._read(params)
        if not self._problems:
            return ""
        items = "".join(f"<li>{html.escape(problem)}</li>" for problem in self._problems)
        return (
            "<div class='speedkit_paste_warning'>Some Speedkit settings in the pasted parameters could not be "
            f"used; those controls were set to their defaults:<ul>{items}</ul></div>"
        )


def pasted_value(name: str, params: Mapping[str, object]):
    """The value of script arg `name` for pasted infotext (defaults without Speedkit keys)."""
    return PastedPlan().value(name, params)


def paste_fields(controls: SwitchControls, paste_field_cls) -> list:
    """infotext_fields entries: pasting an image's parameters sets every control and the warning."""
    pasted = PastedPlan()
    fields = [
        paste_field_cls(component, lambda params, name=name: pasted.value(name, params))
        for name, component in zip(ARG_NAMES, controls.inputs(), strict=True)
    ]
    if controls.paste_warning is not None:
        fields.append(paste_field_cls(controls.paste_warning, pasted.warning))
    return fields


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
