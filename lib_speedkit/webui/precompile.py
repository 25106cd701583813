"""Precompile in the WebUI (request and cost: lib_speedkit.precompile): one short generation per
shape through the WebUI's own pipeline (the bench's `generate`: images are not saved), with the
queue lock held; the Speedkit tab's "Precompile" button and POST /speedkit/v1/precompile.
"""

from __future__ import annotations

import time

from modules import shared

from ..bench.presets import get_preset
from ..errors import SpeedkitError
from ..plan import KEY_COMPILE, format_infotext
from ..precompile import STEPS, PrecompileRequest, precompile_request, precompile_request_from_body, result_markdown
from ..script_args import plan_from_args
from . import bench, compiled, fast_path, hooks
from .availability import check_plan_can_run, unavailable_switches
from .exclusive import holding_the_queue


def shape_preset(width: int, height: int, batch_size: int):
    """A short generation at this shape; empty prompts (one 77-token chunk, as most prompts are:
    a longer prompt is another shape and compiles on its first use)."""
    overrides = {"width": width, "height": height, "batch_size": batch_size, "steps": STEPS, "runs": 1}
    return get_preset("Asuka test", {**overrides, "warmup": 0, "prompt": "", "negative_prompt": ""})


def prepare_shape(request: PrecompileRequest, width: int, height: int, batch_size: int) -> dict:
    compiles_before = len(compiled.COMPILER.compiles)
    started = time.perf_counter()
    bench.generate(shape_preset(width, height, batch_size), request.plan)
    record = hooks.last_record()
    return {
        "width": width,
        "height": height,
        "batch_size": batch_size,
        "seconds": round(time.perf_counter() - started, 1),
        "compile_seconds": round(sum(c.seconds for c in compiled.COMPILER.compiles[compiles_before:]), 1),
        "compiled": record is not None and record.applied.get(KEY_COMPILE) == "True",
        "notes": list(record.notes) if record is not None else [],
    }


def run_precompile(request: PrecompileRequest) -> dict:
    """Every shape of `request`, until the user interrupts. Call with the queue lock held."""
    if shared.sd_model is None:
        raise SpeedkitError("no checkpoint is loaded")
    if not fast_path.graphs_run_on_this_device():
        raise SpeedkitError(f"the compiled UNet needs the CUDA graph, and the WebUI runs on {shared.device.type}")
    check_plan_can_run(request.plan)
    shapes = request.shapes
    shared.state.job_count = len(shapes)
    done = []
    for index, (width, height, batch_size) in enumerate(shapes):
        if shared.state.interrupted:
            break
        shared.state.textinfo = f"Speedkit precompile {index + 1}/{len(shapes)}: {width}×{height}, batch {batch_size}"
        done.append(prepare_shape(request, width, height, batch_size))
        shared.state.nextjob()
    return {
        "shapes": done,
        "interrupted": len(done) < len(shapes),
        "switches": format_infotext(request.plan),
        "compiled_graphs": compiled.compiled_graphs(fast_path.GRAPHS),
    }


def tab_handler(sizes: str, batch_sizes: str, *switch_args) -> tuple[dict | None, str]:
    """The tab's Precompile button (inside the WebUI's queue wrapper, which appends the time taken
    to the last output): the result and its report, or the reason it did not run."""
    try:
        unavailable = unavailable_switches()
        plan = plan_from_args(switch_args, unavailable=unavailable)
        result = run_precompile(precompile_request(sizes, batch_sizes, plan, unavailable))
    except SpeedkitError as error:
        return None, f"**Precompile did not run:** {error}"
    return result, result_markdown(result)


def precompile_endpoint(body: dict):
    """POST /speedkit/v1/precompile: 422 for a bad body (naming the field), 409 when it cannot run."""
    from fastapi import HTTPException

    try:
        request = precompile_request_from_body(body, unavailable_switches())
        check_plan_can_run(request.plan)
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit precompile: {error}") from None
    return holding_the_queue(
        "speedkit-precompile", "speedkit precompile", lambda: run_precompile(request), SpeedkitError
    )
