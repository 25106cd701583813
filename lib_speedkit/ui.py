"""Gradio 3.41 components of the Speedkit accordion (txt2img, img2img and the bench tab). No WebUI
imports: the host's InputAccordion and PasteField classes are passed in by the adapter.

The accordion's controls are made from script_args.SCRIPT_ARGS (label, widget, choices, range,
default) and returned in its order, which is the order of the API's positional args.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import gradio as gr

from .modes import CUSTOM, MODE_NAMES, MODES, NAMED_MODES, OFF, resolve_mode
from .plan import INFOTEXT_PREFIX, parse_infotext
from .script_args import ARG_NAMES, ARGS_BY_NAME, MODE_SWITCHES, SCRIPT_ARGS, ScriptArg, args_by_name_from_plan

CUTOFF_VALUE_LABELS = {
    "off": "Cutoff value (unused while off)",
    "sigma": "Skip the negative pass below this sigma",
    "fraction": "Skip the negative pass from this fraction of the steps on",
    "adaptive": "Skip once cond/uncond similarity reaches τ",
}
ROWS = ("attention", "fast path", "cutoff", "tome", "tome options", "deepcache", "deepcache window")
"""The accordion's rows, top to bottom; the unavailable-backend note follows the fast-path row."""
READ_ONLY_UNDER_NOTE = ("attention", "cutoff_mode")
"""Controls a disabled note (Forge) makes read-only."""


@dataclass
class SwitchControls:
    """The accordion's input components by argument name, and its paste warning."""

    components: dict[str, gr.components.Component]
    paste_warning: gr.components.Component | None = None
    mode_cost: gr.components.Component | None = None

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


def _control(arg: ScriptArg, elem_id: str, backend_choices: list[str], read_only: bool, value: object):
    """One control made from its ScriptArg, showing `value`."""
    common = {"label": arg.label, "elem_id": elem_id}
    if arg.info:
        common["info"] = arg.info
    if read_only:
        common["interactive"] = False
    if arg.widget == "dropdown":
        choices = backend_choices if arg.name == "attention" else [str(c) for c in arg.choices]
        return gr.Dropdown(choices=choices, value=control_value(arg, value), **common)
    if arg.widget == "checkbox":
        return gr.Checkbox(value=value, **common)
    if arg.widget == "slider":
        low, high = arg.bounds
        return gr.Slider(minimum=low, maximum=high, step=arg.step, value=value, **common)
    if arg.name == "cutoff_value":
        common["label"] = CUTOFF_VALUE_LABELS["off"]
    return gr.Number(value=value, precision=0 if arg.kind is int else None, **common)


def mode_cost_html(mode: str) -> str:
    return f"<p class='speedkit_mode_cost'>{html.escape(MODES[mode].cost)}</p>"


def shown_values(mode: str, unavailable: Mapping[str, str]) -> dict[str, object]:
    """What the controls under Advanced show for `mode` (Custom and Off: the defaults)."""
    values = {arg.name: arg.default for arg in SCRIPT_ARGS}
    if mode in NAMED_MODES:
        values.update(resolve_mode(mode, unavailable))
    return values


def build_controls(
    elem_id: Callable[[str], str],
    backend_choices: list[str],
    unavailable: Mapping[str, str],
    accordion_cls,
    disabled_note: str | None = None,
    default_mode: str = OFF,
) -> SwitchControls:
    """Create the accordion and its controls (call inside the script's ui()).

    `default_mode` (Settings → Speedkit): Off keeps the accordion closed with Lossless chosen,
    so opening it is one click to the fastest lossless setting; a named mode opens it with that.
    """
    mode = default_mode if default_mode in NAMED_MODES else NAMED_MODES[0]
    values = shown_values(mode, unavailable)
    components: dict[str, gr.components.Component] = {}
    enabled_arg = ARGS_BY_NAME["enabled"]
    opened = default_mode in NAMED_MODES
    with accordion_cls(opened, label=enabled_arg.label, elem_id=elem_id("enabled")) as enabled:
        components["enabled"] = enabled
        mode_arg = ARGS_BY_NAME["mode"]
        components["mode"] = gr.Radio(
            label=mode_arg.label, choices=list(MODE_NAMES), value=mode, elem_id=elem_id("mode")
        )
        cost = gr.HTML(value=mode_cost_html(mode), elem_id=elem_id("mode_cost"))
        note = f"<p>{html.escape(disabled_note)}</p>" if disabled_note else ""
        gr.HTML(value=unavailable_note_html(unavailable) + note, elem_id=elem_id("unavailable"))
        with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
            for row in ROWS:
                with gr.Row(elem_classes=["speedkit_row"]):
                    for arg in (a for a in SCRIPT_ARGS if a.row == row):
                        read_only = (disabled_note is not None and arg.name in READ_ONLY_UNDER_NOTE) or (
                            arg.name in unavailable
                        )
                        components[arg.name] = _control(
                            arg, elem_id(arg.name), backend_choices, read_only, values[arg.name]
                        )
        paste_warning = gr.HTML(value="", elem_id=elem_id("paste_warning"))
    controls = SwitchControls(components, paste_warning, cost)
    _wire(controls, cost, unavailable)
    return controls


def _wire(controls: SwitchControls, cost, unavailable: Mapping[str, str]) -> None:
    """A mode sets the controls under Advanced; changing one of them by hand means Custom."""
    switches = [controls.components[name] for name in MODE_SWITCHES]

    def choose(mode: str):
        if mode not in NAMED_MODES:
            return [mode_cost_html(mode)] + [gr.update() for _ in switches]
        values = shown_values(mode, unavailable)
        args = [ARGS_BY_NAME[name] for name in MODE_SWITCHES]
        return [mode_cost_html(mode)] + [gr.update(value=control_value(arg, values[arg.name])) for arg in args]

    controls.mode.input(fn=choose, inputs=[controls.mode], outputs=[cost, *switches], show_progress=False)
    for switch in switches:
        switch.input(fn=lambda *_: (CUSTOM, mode_cost_html(CUSTOM)), outputs=[controls.mode, cost], show_progress=False)
    controls.cutoff_mode.change(
        fn=lambda mode: gr.update(label=CUTOFF_VALUE_LABELS.get(mode, "")),
        inputs=[controls.cutoff_mode],
        outputs=[controls.cutoff_value],
        show_progress=False,
    )


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
    if controls.mode_cost is not None:
        fields.append(paste_field_cls(controls.mode_cost, lambda params: mode_cost_html(pasted.value("mode", params))))
    return fields
