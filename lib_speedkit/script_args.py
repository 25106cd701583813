"""The Speedkit script's arguments: the one home of every per-generation setting.

Each `ScriptArg` carries the setting's name (its API position is its index here), type, default,
the control's label and widget, its allowed choices or range, the SpeedPlan field it becomes and
its XYZ-plot axis. Everything else is derived from this table: the accordion's controls and
their order (ui.py), the API's positional order and its 422 messages, paste, the XYZ axes
(webui/xyz.py) and the README's API table (a test compares them).

The WebUI passes an AlwaysVisible script's values positionally, in the order `ui()` returns its
components; API clients send the same list as `alwayson_scripts.speedkit.args`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import PlanError
from .modes import CUSTOM, MODE_NAMES, OFF, canonical_mode, resolve_mode
from .plan import (
    ATTENTION_CHOICES,
    CUTOFF_DEFAULT_VALUES,
    CUTOFF_MODES,
    DEEPCACHE_MAX_BRANCH,
    DEEPCACHE_MAX_INTERVAL,
    DEEPCACHE_MAX_WINDOW,
    KEEP,
    TOME_DOWNSAMPLES,
    TOME_MAX_RATIO,
    TOME_MAX_STRIDE,
    AttentionConfig,
    ChannelsLastConfig,
    CompileConfig,
    CudaGraphConfig,
    DeepCacheConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
    SpeedPlan,
    TokenMergingConfig,
)

SCRIPT_TITLE = "Speedkit"
IMAGE_SEED = -1
"""`tome_seed` value meaning: seed the random merging with the image's seed."""


@dataclass(frozen=True)
class ScriptArg:
    """One setting of the accordion / API / XYZ plot.

    widget: "accordion" | "dropdown" | "checkbox" | "slider" | "number"; `row` groups controls
    on one line of the accordion; `bounds`/`step` for sliders and numbers; `choices` for
    dropdowns (None: the host supplies them, e.g. the attention backends it offers); `axis`: the
    XYZ axis label after "[Speedkit] " (None: no axis); `plan_field`: the dotted SpeedPlan field
    (errors from the plan are reported under the argument's name).
    """

    name: str
    kind: type
    default: object
    label: str
    help: str
    widget: str
    row: str = ""
    choices: tuple | None = None
    bounds: tuple[float, float] | None = None
    step: float | None = None
    info: str | None = None
    axis: str | None = None
    plan_field: str | None = None


SCRIPT_ARGS: tuple[ScriptArg, ...] = (
    ScriptArg("enabled", bool, False, "Speedkit", "`true` applies the rest", "accordion"),
    ScriptArg(
        "attention",
        str,
        KEEP,
        "Attention backend",
        ", ".join(f"`{choice}`" for choice in ATTENTION_CHOICES)
        + " (WebUI titles such as `sdp - scaled dot product` work too)",
        "dropdown",
        row="attention",
        choices=ATTENTION_CHOICES,
        info="keep = the backend set in Settings → Optimizations",
        axis="Attention backend",
        plan_field="attention.backend",
    ),
    ScriptArg(
        "cutoff_mode",
        str,
        "off",
        "Negative-guidance cutoff",
        "`off`, `sigma`, `fraction`, `adaptive`",
        "dropdown",
        row="cutoff",
        choices=CUTOFF_MODES,
        axis="Guidance cutoff",  # values "mode" or "mode value" ("fraction 0.75"): plan.split_cutoff_text
        plan_field="cutoff.mode",
    ),
    ScriptArg(
        "cutoff_value",
        float,
        CUTOFF_DEFAULT_VALUES["fraction"],
        "Cutoff value",
        "sigma > 0; fraction 0–1; τ 0–1",
        "number",
        row="cutoff",
        axis="Guidance cutoff value",
        plan_field="cutoff.value",
    ),
    ScriptArg(
        "tome_ratio",
        float,
        0.0,
        "ToMe ratio (0 = off)",
        f"0–{TOME_MAX_RATIO} (0 = off)",
        "slider",
        row="tome",
        bounds=(0.0, TOME_MAX_RATIO),
        step=0.05,
        axis="ToMe ratio",
        plan_field="tome.ratio",
    ),
    ScriptArg(
        "tome_hr_ratio",
        float,
        0.0,
        "ToMe ratio, hires pass (0 = same)",
        f"0–{TOME_MAX_RATIO} (0 = same as tome_ratio)",
        "slider",
        row="tome",
        bounds=(0.0, TOME_MAX_RATIO),
        step=0.05,
        axis="ToMe ratio, hires pass",
        plan_field="tome.hr_ratio",
    ),
    ScriptArg(
        "tome_max_downsample",
        int,
        1,
        "ToMe max downsample",
        "1, 2, 4, 8",
        "dropdown",
        row="tome options",
        choices=TOME_DOWNSAMPLES,
        axis="ToMe max downsample",
        plan_field="tome.max_downsample",
    ),
    ScriptArg(
        "tome_sx",
        int,
        2,
        "ToMe stride x",
        f"1–{TOME_MAX_STRIDE}",
        "slider",
        row="tome options",
        bounds=(1, TOME_MAX_STRIDE),
        step=1,
        axis="ToMe stride x",
        plan_field="tome.sx",
    ),
    ScriptArg(
        "tome_sy",
        int,
        2,
        "ToMe stride y",
        f"1–{TOME_MAX_STRIDE}",
        "slider",
        row="tome options",
        bounds=(1, TOME_MAX_STRIDE),
        step=1,
        axis="ToMe stride y",
        plan_field="tome.sy",
    ),
    ScriptArg(
        "tome_random",
        bool,
        False,
        "ToMe random",
        "random destination tokens",
        "checkbox",
        row="tome options",
        axis="ToMe random",
        plan_field="tome.use_rand",
    ),
    ScriptArg(
        "tome_seed",
        int,
        IMAGE_SEED,
        "ToMe seed (-1 = image seed)",
        "-1 = the image seed; 0 to 2**64 - 1",
        "number",
        row="tome options",
        axis="ToMe seed",
        plan_field="tome.seed",
    ),
    ScriptArg(
        "channels_last",
        bool,
        False,
        "Channels-last UNet",
        "channels-last (NHWC) UNet weights and inputs",
        "checkbox",
        row="attention",
        axis="Channels-last",
        plan_field="channels_last.enabled",
    ),
    ScriptArg(
        "cuda_graph",
        bool,
        False,
        "CUDA graph (fast path)",
        "replay the UNet from CUDA graphs (the fast path; needs torch >= 2.4)",
        "checkbox",
        row="fast path",
        info="replays the UNet; lossless, also with LoRAs; keeps ~1 UNet call of VRAM",
        axis="CUDA graph",
        plan_field="cuda_graph.enabled",
    ),
    ScriptArg(
        "lean_step",
        bool,
        False,
        "Lean step",
        "bypass the Lora built-in's layer wrappers during sampling (LoRAs merged first)",
        "checkbox",
        row="fast path",
        info="skip the Lora built-in's layer wrappers; LoRAs merged first; lossless",
        axis="Lean step",
        plan_field="lean_step.enabled",
    ),
    ScriptArg(
        "mode",
        str,
        CUSTOM,
        "Speed mode",
        ", ".join(f"`{name}`" for name in MODE_NAMES)
        + ": a named mode sets the switches itself; `Custom` uses the values above",
        "radio",
        choices=MODE_NAMES,
        axis="Mode",
        plan_field="mode",
    ),
    ScriptArg(
        "deepcache_interval",
        int,
        1,
        "DeepCache N (1 = off)",
        f"1–{DEEPCACHE_MAX_INTERVAL} (1 = off): a full UNet step every N steps, the shallow branch between",
        "slider",
        row="deepcache",
        bounds=(1, DEEPCACHE_MAX_INTERVAL),
        step=1,
        info="lossy: a full UNet step every N steps; the steps between reuse its deep features",
        axis="DeepCache interval",
        plan_field="deepcache.interval",
    ),
    ScriptArg(
        "deepcache_branch",
        int,
        0,
        "DeepCache branch (0 = shallowest)",
        f"0–{DEEPCACHE_MAX_BRANCH}: the skip connection below which features are reused (SDXL: 0–8)",
        "slider",
        row="deepcache",
        bounds=(0, DEEPCACHE_MAX_BRANCH),
        step=1,
        axis="DeepCache branch",
        plan_field="deepcache.branch",
    ),
    ScriptArg(
        "deepcache_hr_interval",
        int,
        0,
        "DeepCache N, hires pass (0 = same)",
        f"0–{DEEPCACHE_MAX_INTERVAL} (0 = same as deepcache_interval, 1 = off in the hires pass)",
        "slider",
        row="deepcache",
        bounds=(0, DEEPCACHE_MAX_INTERVAL),
        step=1,
        axis="DeepCache interval, hires pass",
        plan_field="deepcache.hr_interval",
    ),
    ScriptArg(
        "deepcache_start",
        int,
        0,
        "DeepCache: full steps at the start",
        f"0–{DEEPCACHE_MAX_WINDOW}: steps at the start of each pass that run the whole UNet",
        "number",
        row="deepcache window",
        axis="DeepCache full steps at start",
        plan_field="deepcache.start",
    ),
    ScriptArg(
        "deepcache_end",
        int,
        0,
        "DeepCache: full steps at the end",
        f"0–{DEEPCACHE_MAX_WINDOW}: steps at the end of each pass that run the whole UNet",
        "number",
        row="deepcache window",
        axis="DeepCache full steps at end",
        plan_field="deepcache.end",
    ),
    ScriptArg(
        "compile_unet",
        bool,
        False,
        "Compile UNet (with CUDA graph)",
        "torch.compile (inductor) the UNet per shape, replayed from the CUDA graphs (needs cuda_graph, triton)",
        "checkbox",
        row="fast path",
        info="first image per size compiles (~1 min); fp16-noise differences",
        axis="Compile UNet",
        plan_field="compile.enabled",
    ),
)
ARG_NAMES = tuple(arg.name for arg in SCRIPT_ARGS)
MODE_INDEX = ARG_NAMES.index("mode")
"""The mode's API position (14). Settings added later (DeepCache, the compiled UNet) come after it,
so clients that send 15 values keep their meaning and clients that send fewer get `Custom` and the
defaults."""
ARGS_BY_NAME = {arg.name: arg for arg in SCRIPT_ARGS}
MODE_SWITCHES = tuple(arg.name for arg in SCRIPT_ARGS if arg.name not in ("enabled", "mode"))
"""What a named mode decides (everything but the accordion itself and the mode)."""
DEFAULT_ARGS = tuple(arg.default for arg in SCRIPT_ARGS)
_PLAN_FIELD_TO_ARG = {arg.plan_field: arg.name for arg in SCRIPT_ARGS if arg.plan_field}


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
    if arg.name == "mode":
        mode = canonical_mode(value)
        if mode is None:
            raise PlanError(arg_label(arg.name), value, "one of: " + ", ".join(MODE_NAMES))
        return mode
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
    args: Sequence[object],
    overrides: Mapping[str, object] | None = None,
    image_seed: int | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> SpeedPlan | None:
    """The SpeedPlan the script args ask for; None when Speedkit is not enabled or the mode is Off.

    Overrides (from XYZ-plot axes) enable Speedkit even if the accordion is closed; an override of
    a setting (not of the mode) means `Custom`. A named mode sets its switches for this WebUI
    (`unavailable`: what cannot run here, see modes.resolve_mode). `image_seed` replaces
    `tome_seed = -1` when random merging is on. Raises PlanError naming the argument.
    """
    values = named_args(args, overrides)
    if overrides and "mode" not in overrides:
        values["mode"] = CUSTOM
    if (not values["enabled"] and not overrides) or values["mode"] == OFF:
        return None
    if values["mode"] != CUSTOM:
        values = {**values, **{name: ARGS_BY_NAME[name].default for name in MODE_SWITCHES}}
        values.update(resolve_mode(values["mode"], unavailable))
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
        mode=values["mode"],
        deepcache=DeepCacheConfig(
            interval=values["deepcache_interval"],
            branch=values["deepcache_branch"],
            start=values["deepcache_start"],
            end=values["deepcache_end"],
            hr_interval=values["deepcache_hr_interval"],
        ),
        compile=CompileConfig(values["compile_unet"]),
    )


def _plan_value(plan: SpeedPlan, arg: ScriptArg) -> object:
    section, _, attribute = arg.plan_field.partition(".")
    value = getattr(plan, section)
    return getattr(value, attribute) if attribute else value


def args_by_name_from_plan(plan: SpeedPlan) -> dict[str, object]:
    """The script args (by name) that reproduce `plan`: the inverse of plan_from_args."""
    values = {arg.name: _plan_value(plan, arg) for arg in SCRIPT_ARGS if arg.plan_field}
    values["enabled"] = not plan.is_noop
    if not plan.cutoff.enabled:
        values["cutoff_value"] = ARGS_BY_NAME["cutoff_value"].default
    if values["tome_seed"] is None:
        values["tome_seed"] = IMAGE_SEED
    return values


def args_from_plan(plan: SpeedPlan) -> list[object]:
    """Positional script args that reproduce `plan` (for pasting infotext and API clients)."""
    values = args_by_name_from_plan(plan)
    return [values[name] for name in ARG_NAMES]


def _markdown_value(value: object) -> str:
    return f"`{str(value).lower()}`" if isinstance(value, bool) else f"`{value!r}`".replace("'", '"')


def api_table_markdown() -> str:
    """The README's table of the API's positional args, made from SCRIPT_ARGS (a test keeps the
    README equal to it)."""
    rows = ["| # | name | default | values |", "|---|---|---|---|"]
    for index, arg in enumerate(SCRIPT_ARGS):
        rows.append(f"| {index} | {arg.name} | {_markdown_value(arg.default)} | {arg.help} |")
    return "\n".join(rows)
