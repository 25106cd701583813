"""A benchmark request, validated once, host-free: the REST route, the tab and the CLI use it.

Body of `POST /speedkit/v1/bench` (every field optional):
  preset     a preset name (default "Asuka test")
  overrides  preset fields to change ({"runs": 5, "steps": 20, ...})
  speedkit   the accordion's args as a list ([true, "sdp", ...]); null = Speedkit off
  matrix     true: compare switches (the baseline, each switch alone, the user's settings)
  entries    with matrix: custom rows [{"label": ..., "speedkit": [args] | "extension-absent"}]
  label      stored with the result
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import PlanError
from ..plan import (
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
from ..script_args import plan_from_args
from .presets import BenchPreset, get_preset

EXTENSION_ABSENT = "extension-absent"
"""A custom matrix entry's `speedkit` value: Speedkit off AND its patches taken out, to measure
what the installed extension costs with every switch off."""
BODY_FIELDS = ("preset", "overrides", "speedkit", "matrix", "entries", "label")
ENTRY_SHAPE = 'a non-empty list of {"label": ..., "speedkit": [args]}'

FAST_PATH = SpeedPlan(
    AttentionConfig("sdp"),
    channels_last=ChannelsLastConfig(True),
    cuda_graph=CudaGraphConfig(True),
    lean_step=LeanStepConfig(True),
)
MATRIX_SWITCHES: tuple[tuple[str, SpeedPlan], ...] = (
    ("attention sdp", SpeedPlan(attention=AttentionConfig("sdp"))),
    ("attention sdp-math", SpeedPlan(attention=AttentionConfig("sdp-math"))),
    ("cutoff fraction 0.75", SpeedPlan(cutoff=GuidanceCutoffConfig("fraction", 0.75))),
    ("ToMe 0.5", SpeedPlan(tome=TokenMergingConfig(ratio=0.5))),
    ("channels-last", SpeedPlan(channels_last=ChannelsLastConfig(True))),
    ("CUDA graph", SpeedPlan(cuda_graph=CudaGraphConfig(True))),
    ("lean step", SpeedPlan(lean_step=LeanStepConfig(True))),
    *((f"DeepCache N={n}", SpeedPlan(deepcache=DeepCacheConfig(interval=n))) for n in (2, 3, 5)),
    ("fast path (sdp, CUDA graph, channels-last, lean step)", FAST_PATH),
    ("fast path + DeepCache N=3", replace(FAST_PATH, deepcache=DeepCacheConfig(interval=3))),
    ("fast path + compiled UNet", replace(FAST_PATH, compile=CompileConfig(True))),
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
"""The switches "Compare switches" runs, each alone (plus combinations), after the baseline."""

MatrixRow = tuple[str, "SpeedPlan | str"]  # (label, plan or EXTENSION_ABSENT)


@dataclass(frozen=True)
class BenchRequest:
    preset: BenchPreset
    plan: SpeedPlan | None
    matrix: bool = False
    label: str = ""
    entries: tuple[MatrixRow, ...] | None = None  # custom matrix rows (matrix only)


def speedkit_plan(args: object, where: str = "speedkit") -> SpeedPlan | None:
    """The accordion's args (a list, or None for Speedkit off) as a plan; PlanError names `where`."""
    if args is None:
        return None
    if not isinstance(args, list):
        raise PlanError(where, args, "the accordion's args as a list (see README), or null")
    return plan_from_args(args) if args else None


def matrix_entries_from_body(value: object) -> tuple[MatrixRow, ...] | None:
    """`entries`: [{"label": "...", "speedkit": [args]}, ...] -> (label, plan) pairs."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise PlanError("entries", value, ENTRY_SHAPE)
    parsed, labels = [], set()
    for index, item in enumerate(value):
        where = f"entries[{index}]"
        if not isinstance(item, dict) or set(item) != {"label", "speedkit"}:
            raise PlanError(where, item, 'an object with "label" and "speedkit"')
        label, args = item["label"], item["speedkit"]
        if not isinstance(label, str) or not label or label in labels:
            raise PlanError(f"{where}.label", label, "a unique, non-empty string")
        labels.add(label)
        parsed.append((label, _entry_plan(where, args)))
    return tuple(parsed)


def _entry_plan(where: str, args: object) -> SpeedPlan | str:
    if args == EXTENSION_ABSENT:
        return EXTENSION_ABSENT
    if not isinstance(args, list) or not args or args[0] is not True:
        raise PlanError(
            f"{where}.speedkit", args, f'the accordion\'s args with enabled = true, or "{EXTENSION_ABSENT}"'
        )
    try:
        return plan_from_args(args)
    except PlanError as error:
        raise PlanError(f"{where}.speedkit {error.field}", error.value, error.allowed) from None


def bench_request(body: object) -> BenchRequest:
    """Validate a POST /speedkit/v1/bench body; PlanError names the bad field."""
    if not isinstance(body, dict):
        raise PlanError("body", body, "a JSON object")
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise PlanError(unknown[0], body[unknown[0]], ", ".join(BODY_FIELDS))
    overrides = body.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise PlanError("overrides", overrides, "an object of preset fields")
    preset = get_preset(body.get("preset", "Asuka test"), overrides)
    plan = speedkit_plan(body.get("speedkit"))
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
