"""Precompiling the compiled UNet for chosen sizes and batch sizes, host-free: what a request
asks for, validated once (the tab and POST /speedkit/v1/precompile use it).

A precompile runs one short generation (2 steps) per size and batch size with the switches
given plus the CUDA graph and the compiled UNet, so that the first real generation at that size
finds its kernels compiled and its graphs captured. Cost: about a minute per new shape the first
time (seconds from inductor's on-disk cache after a restart); memory: each shape's graphs stay
cached within the graph budget (Settings → Speedkit), like those of a generation.

Body of `POST /speedkit/v1/precompile` (each field optional):
  sizes        "512x512, 768x512" or ["512x512", [1024, 1024]] (default "512x512")
  batch_sizes  "1, 4" or [1, 4] (default [1])
  speedkit     the accordion's args as a list (default: the Lossless mode's switches); the CUDA
               graph and the compiled UNet are switched on in any case
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .errors import PlanError
from .plan import CompileConfig, CudaGraphConfig, SpeedPlan
from .script_args import plan_from_args

BODY_FIELDS = ("sizes", "batch_sizes", "speedkit")
SIZE_RANGE = (64, 2048)
MAX_BATCH_SIZE = 8
MAX_SHAPES = 12
STEPS = 2
"""Two steps: the first call of each shape compiles and captures, the next replays."""
SIZES_SHAPE = 'sizes as "WIDTHxHEIGHT" (multiples of 8 from 64 to 2048), e.g. "512x512, 768x512"'
BATCHES_SHAPE = f'batch sizes from 1 to {MAX_BATCH_SIZE}, e.g. "1, 4"'


@dataclass(frozen=True)
class PrecompileRequest:
    """The shapes to prepare, and the switches their generations run with (graph and compile on)."""

    sizes: tuple[tuple[int, int], ...]
    batch_sizes: tuple[int, ...]
    plan: SpeedPlan

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        """(width, height, batch size) in the order they run."""
        return [(width, height, batch) for width, height in self.sizes for batch in self.batch_sizes]


def _items(value: object, field: str, shape: str) -> list:
    if isinstance(value, str):
        return [item for item in re.split(r"[,;\s]+", value.strip()) if item]
    if isinstance(value, (list, tuple)):
        return list(value)
    raise PlanError(field, value, shape)


def _size(item: object, field: str) -> tuple[int, int]:
    if isinstance(item, str):
        match = re.fullmatch(r"(\d+)\s*[x×*]\s*(\d+)", item.strip().lower())
        pair = (int(match[1]), int(match[2])) if match else None
    elif isinstance(item, (list, tuple)) and len(item) == 2 and all(type(v) is int for v in item):
        pair = (item[0], item[1])
    else:
        pair = None
    low, high = SIZE_RANGE
    if pair is None or not all(low <= side <= high and side % 8 == 0 for side in pair):
        raise PlanError(field, item, SIZES_SHAPE)
    return pair


def _batch(item: object, field: str) -> int:
    if isinstance(item, str) and item.strip().isdigit():
        item = int(item)
    if type(item) is not int or not 1 <= item <= MAX_BATCH_SIZE:
        raise PlanError(field, item, BATCHES_SHAPE)
    return item


def parse_sizes(value: object) -> tuple[tuple[int, int], ...]:
    items = _items(value, "sizes", SIZES_SHAPE)
    if not items:
        raise PlanError("sizes", value, SIZES_SHAPE)
    return tuple(dict.fromkeys(_size(item, f"sizes[{index}]") for index, item in enumerate(items)))


def parse_batch_sizes(value: object) -> tuple[int, ...]:
    items = _items(value, "batch_sizes", BATCHES_SHAPE)
    if not items:
        raise PlanError("batch_sizes", value, BATCHES_SHAPE)
    return tuple(dict.fromkeys(_batch(item, f"batch_sizes[{index}]") for index, item in enumerate(items)))


def with_compile(plan: SpeedPlan | None, unavailable: Mapping[str, str] | None = None) -> SpeedPlan:
    """`plan` (None: the Lossless mode's switches in this WebUI, `unavailable` as
    modes.resolve_mode takes it) with the CUDA graph and the compiled UNet on."""
    base = plan if plan is not None else plan_from_args([True], {"mode": "Lossless"}, unavailable=unavailable)
    return replace(base, cuda_graph=CudaGraphConfig(True), compile=CompileConfig(True))


def precompile_request(
    sizes: object, batch_sizes: object, plan: SpeedPlan | None, unavailable: Mapping[str, str] | None = None
) -> PrecompileRequest:
    """Validated shapes (PlanError names the field) and the plan with graph and compile on."""
    request = PrecompileRequest(parse_sizes(sizes), parse_batch_sizes(batch_sizes), with_compile(plan, unavailable))
    if len(request.shapes) > MAX_SHAPES:
        raise PlanError("sizes", sizes, f"at most {MAX_SHAPES} sizes × batch sizes in one precompile")
    return request


def precompile_request_from_body(body: object, unavailable: Mapping[str, str] | None = None) -> PrecompileRequest:
    """Validate a POST /speedkit/v1/precompile body; PlanError names the bad field."""
    if not isinstance(body, dict):
        raise PlanError("body", body, "a JSON object")
    unknown = sorted(set(body) - set(BODY_FIELDS))
    if unknown:
        raise PlanError(unknown[0], body[unknown[0]], ", ".join(BODY_FIELDS))
    args = body.get("speedkit")
    if args is not None and not (isinstance(args, list) and args and args[0] is True):
        raise PlanError("speedkit", args, "the accordion's args as a list with enabled = true, or null")
    plan = plan_from_args(args, unavailable=unavailable) if args is not None else None
    return precompile_request(body.get("sizes", "512x512"), body.get("batch_sizes", [1]), plan, unavailable)


def result_markdown(result: dict) -> str:
    """The tab's report of a precompile: one row per shape, then the compiled graphs now cached."""
    lines = ["| size | batch | seconds | compile s | compiled | notes |", "|---|---|---|---|---|---|"]
    for shape in result["shapes"]:
        notes = "; ".join(shape["notes"]) or ""
        lines.append(
            f"| {shape['width']}×{shape['height']} | {shape['batch_size']} | {shape['seconds']} "
            f"| {shape['compile_seconds']} | {'yes' if shape['compiled'] else 'no'} | {notes} |"
        )
    if result.get("interrupted"):
        lines.append("\nInterrupted: the shapes after the last row were not prepared.")
    graphs = result.get("compiled_graphs") or []
    lines.append(f"\n{len(graphs)} compiled graph(s) cached now, {sum(g['mb'] for g in graphs):.0f} MB.")
    return "\n".join(lines)
