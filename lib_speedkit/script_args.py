"""The Speedkit script's arguments: their order (the UI's, so the API's positions), defaults and
conversion into a SpeedPlan.

The WebUI passes an AlwaysVisible script's values positionally, in the order `ui()` returns its
components; API clients send the same list as `alwayson_scripts.speedkit.args`. This module is
the single definition of that order, used by the UI builder, the adapter, the API validation and
the README's API example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import PlanError
from .plan import (
    CUTOFF_DEFAULT_VALUES,
    KEEP,
    AttentionConfig,
    ChannelsLastConfig,
    CudaGraphConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
    SpeedPlan,
    TokenMergingConfig,
)

IMAGE_SEED = -1
"""`tome_seed` value meaning: seed the random merging with the image's seed."""


@dataclass(frozen=True)
class ScriptArg:
    name: str
    default: object
    kind: type
    help: str


SCRIPT_ARGS: tuple[ScriptArg, ...] = (
    ScriptArg("enabled", False, bool, "apply Speedkit to this generation"),
    ScriptArg("attention", KEEP, str, "attention backend name, or 'keep'"),
    ScriptArg("cutoff_mode", "off", str, "off | sigma | fraction | adaptive"),
    ScriptArg("cutoff_value", CUTOFF_DEFAULT_VALUES["fraction"], float, "sigma, step fraction or tau"),
    ScriptArg("tome_ratio", 0.0, float, "token merging ratio, 0 = off"),
    ScriptArg("tome_hr_ratio", 0.0, float, "token merging ratio of the hires pass, 0 = same"),
    ScriptArg("tome_max_downsample", 1, int, "1, 2, 4 or 8"),
    ScriptArg("tome_sx", 2, int, "stride x, 1-8"),
    ScriptArg("tome_sy", 2, int, "stride y, 1-8"),
    ScriptArg("tome_random", False, bool, "random destination tokens"),
    ScriptArg("tome_seed", IMAGE_SEED, int, "seed for random merging, -1 = the image seed"),
    ScriptArg("channels_last", False, bool, "channels-last UNet"),
    ScriptArg("cuda_graph", False, bool, "replay the UNet from CUDA graphs (fast path)"),
    ScriptArg("lean_step", False, bool, "bypass the Lora built-in's layer wrappers while no network is loaded"),
)
ARG_NAMES = tuple(arg.name for arg in SCRIPT_ARGS)
DEFAULT_ARGS = tuple(arg.default for arg in SCRIPT_ARGS)

_PLAN_FIELD_TO_ARG = {
    "attention.backend": "attention",
    "cutoff.mode": "cutoff_mode",
    "cutoff.value": "cutoff_value",
    "tome.ratio": "tome_ratio",
    "tome.hr_ratio": "tome_hr_ratio",
    "tome.max_downsample": "tome_max_downsample",
    "tome.sx": "tome_sx",
    "tome.sy": "tome_sy",
    "tome.use_rand": "tome_random",
    "tome.seed": "tome_seed",
    "channels_last.enabled": "channels_last",
    "cuda_graph.enabled": "cuda_graph",
    "lean_step.enabled": "lean_step",
}


def arg_label(name: str) -> str:
    """How errors name an argument: its name and its API position."""
    return f"{name} (args[{ARG_NAMES.index(name)}])"


def _convert(arg: ScriptArg, value: object) -> object:
    """Convert a UI/API/XYZ value to the argument's type, or raise PlanError naming it."""
    if arg.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise PlanError(arg_label(arg.name), value, "true or false")
    if arg.kind is str:
        if isinstance(value, str):
            return value.strip()
        raise PlanError(arg_label(arg.name), value, "a string")
    return _convert_number(arg, value)


def _convert_number(arg: ScriptArg, value: object) -> object:
    """Numbers as ints or floats; numeric strings too. Integers stay exact (seeds exceed 2**53)."""
    allowed = "an integer" if arg.kind is int else "a number"
    if isinstance(value, str):
        value = _number_from_text(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlanError(arg_label(arg.name), value, allowed)
    if arg.kind is float:
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise PlanError(arg_label(arg.name), value, allowed)
    return int(value)


def _number_from_text(text: str) -> object:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def named_args(args: Sequence[object], overrides: Mapping[str, object] | None = None) -> dict[str, object]:
    """Positional script args (a shorter list keeps the defaults) plus overrides, converted by name."""
    if len(args) > len(SCRIPT_ARGS):
        raise PlanError("args", f"{len(args)} values", f"at most {len(SCRIPT_ARGS)} values: {', '.join(ARG_NAMES)}")
    values = dict(zip(ARG_NAMES, DEFAULT_ARGS, strict=True))
    values.update(zip(ARG_NAMES, args, strict=False))
    for name, value in (overrides or {}).items():
        if name not in values:
            raise PlanError(name, value, "one of: " + ", ".join(ARG_NAMES))
        values[name] = value
    return {arg.name: _convert(arg, values[arg.name]) for arg in SCRIPT_ARGS}


def plan_from_args(
    args: Sequence[object], overrides: Mapping[str, object] | None = None, image_seed: int | None = None
) -> SpeedPlan | None:
    """The SpeedPlan the script args ask for; None when Speedkit is not enabled.

    Overrides (from XYZ-plot axes) enable Speedkit even if the accordion is closed. `image_seed`
    replaces `tome_seed = -1` when random merging is on. Raises PlanError naming the argument.
    """
    values = named_args(args, overrides)
    if not values["enabled"] and not overrides:
        return None
    try:
        return _build_plan(values, image_seed)
    except PlanError as error:
        field = error.field.split(" ")[0]
        raise PlanError(arg_label(_PLAN_FIELD_TO_ARG.get(field, field)), error.value, error.allowed) from None


def _build_plan(values: Mapping[str, object], image_seed: int | None) -> SpeedPlan:
    seed = values["tome_seed"]
    if seed == IMAGE_SEED:
        seed = image_seed
    return SpeedPlan(
        attention=AttentionConfig(values["attention"]),
        cutoff=GuidanceCutoffConfig(values["cutoff_mode"], values["cutoff_value"]),
        tome=TokenMergingConfig(
            ratio=values["tome_ratio"],
            hr_ratio=values["tome_hr_ratio"],
            max_downsample=values["tome_max_downsample"],
            sx=values["tome_sx"],
            sy=values["tome_sy"],
            use_rand=values["tome_random"],
            seed=seed,
        ),
        channels_last=ChannelsLastConfig(values["channels_last"]),
        cuda_graph=CudaGraphConfig(values["cuda_graph"]),
        lean_step=LeanStepConfig(values["lean_step"]),
    )


def args_from_plan(plan: SpeedPlan) -> list[object]:
    """Script args that reproduce `plan` (the inverse of plan_from_args, for pasting infotext)."""
    tome = plan.tome
    return [
        not plan.is_noop,
        plan.attention.backend,
        plan.cutoff.mode,
        plan.cutoff.value if plan.cutoff.enabled else DEFAULT_ARGS[ARG_NAMES.index("cutoff_value")],
        tome.ratio,
        tome.hr_ratio,
        tome.max_downsample,
        tome.sx,
        tome.sy,
        tome.use_rand,
        IMAGE_SEED if tome.seed is None else tome.seed,
        plan.channels_last.enabled,
        plan.cuda_graph.enabled,
        plan.lean_step.enabled,
    ]
