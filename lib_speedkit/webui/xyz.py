"""XYZ-plot axes, one per setting of script_args.SCRIPT_ARGS that names an axis.

A value on an axis becomes an override of that argument for the cell (`p.speedkit_overrides`),
which enables Speedkit for the cell even with the accordion closed; values are checked when the
grid starts, so a bad one fails before any image. The cutoff axis takes "mode" or "mode value"
("fraction 0.75"), read by plan.split_cutoff_text.
"""

from __future__ import annotations

from ..plan import CUTOFF_DEFAULT_VALUES, split_cutoff_text
from ..script_args import SCRIPT_ARGS, ScriptArg, plan_from_args
from .attention import backend_choices

AXIS_PREFIX = "[Speedkit] "


def _xyz_module():
    from modules import scripts

    found = [x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]
    return found[0].module if found else None


def cutoff_overrides(text: str) -> dict[str, str]:
    """A cutoff axis value as argument overrides: "fraction 0.75" -> mode and value; "off" -> mode."""
    mode, value = split_cutoff_text(text)
    return {"cutoff_mode": mode} if value is None else {"cutoff_mode": mode, "cutoff_value": value}


def _overrides(arg: ScriptArg, value) -> dict:
    return cutoff_overrides(str(value)) if arg.name == "cutoff_mode" else {arg.name: value}


def _apply(arg: ScriptArg):
    def apply(p, value, _values):
        p.speedkit_overrides = {**getattr(p, "speedkit_overrides", {}), **_overrides(arg, value)}

    return apply


def _confirm(arg: ScriptArg):
    def confirm(_p, values):
        for value in values:
            plan_from_args([True], _overrides(arg, value))

    return confirm


def _choices(arg: ScriptArg, xyz):
    if arg.name == "attention":
        return backend_choices
    if arg.name == "cutoff_mode":
        return lambda: [mode if mode == "off" else f"{mode} {value}" for mode, value in CUTOFF_DEFAULT_VALUES.items()]
    if arg.kind is bool:
        return xyz.boolean_choice(reverse=True)
    if arg.choices is not None:
        return lambda: [str(choice) for choice in arg.choices]
    return None


def axis_options(xyz) -> list:
    """The AxisOptions of every setting with an axis (XYZ's own AxisOption class)."""
    options = []
    for arg in (a for a in SCRIPT_ARGS if a.axis):
        kind = str if arg.kind is bool or arg.name in ("attention", "cutoff_mode") else arg.kind
        options.append(
            xyz.AxisOption(AXIS_PREFIX + arg.axis, kind, _apply(arg), confirm=_confirm(arg), choices=_choices(arg, xyz))
        )
    return options


def add_axes() -> None:
    """on_before_ui: add the axes once (the XYZ script is loaded by then)."""
    xyz = _xyz_module()
    if xyz is None or any(option.label.startswith(AXIS_PREFIX) for option in xyz.axis_options):
        return
    xyz.axis_options.extend(axis_options(xyz))
