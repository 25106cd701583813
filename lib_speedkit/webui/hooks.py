"""The generations in progress, and the hooks scripts/speedkit.py, the bench and the host patches
call for a `p`. Generations are tracked per `p`, innermost last: one started inside another
(ADetailer's inner pass) gets the outer one as its `outer` and never touches its state.

  before_process  -> prepare_generation   build and check the plan; hold the host's own ToMe at 0
  process         -> activate_generation  generation features (refused with the reason)
  before_hr       -> before_hires         the hires pass's ToMe ratio
  process_before_every_sampling -> before_sampling   pass features (CUDA graph, lean step)
  post_sample     -> after_sampling       pass features off again
  (finally)       -> finish_generation    everything restored: from a wrapper around
                                          `processing.process_images_inner` (success, error,
                                          out of memory, interrupt), from postprocess, on unload
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from ..errors import SpeedkitError
from ..module_walk import walk_once
from ..plan import SpeedPlan
from ..script_args import plan_from_args
from .availability import unavailable_switches
from .generation import Generation
from .phases import speedkit_time
from .record import GenerationRecord


class Registry:
    """Generations in progress, innermost last; `last` is what the status route reports."""

    active: ClassVar[list[Generation]] = []
    last: GenerationRecord | None = None


@contextmanager
def own_work(generation: Generation, phase: str) -> Iterator[None]:
    """Speedkit's own work in a hook: timed into the record's `overhead_s`, each model walked once."""
    with speedkit_time(generation.record.overhead_s, phase), walk_once():
        yield


def generation_for(p) -> Generation | None:
    return next((g for g in reversed(Registry.active) if g.p is p), None)


def prepare_generation(p, args, overrides=None) -> None:
    """before_process: build the plan from the script args; refuse bad input; set host overrides."""
    try:
        overrides = overrides or getattr(p, "speedkit_overrides", None)
        plan = plan_from_args(args, overrides, unavailable=unavailable_switches())
    except SpeedkitError as error:
        _start(Generation(p, SpeedPlan())).refuse(str(error))
        return
    prepare_generation_with_plan(p, plan)


def prepare_generation_with_plan(p, plan: SpeedPlan | None) -> None:
    """Like prepare_generation, for a plan built elsewhere (the benchmark); None: Speedkit off."""
    nested = bool(Registry.active)
    if plan is None:
        if not nested:  # graphs stay cached: switching Speedkit off and on again costs no capture
            Registry.last = GenerationRecord(enabled=False, finished=time.time())
        return
    _start(Generation(p, plan, outer=Registry.active[-1] if nested else None)).prepare()


def _start(generation: Generation) -> Generation:
    previous = generation_for(generation.p)
    if previous is not None:  # the same p prepared twice (should not happen): restore it first
        finish_generation(generation.p)
    Registry.active.append(generation)
    if generation.outer is None:
        Registry.last = generation.record
    return generation


def activate_generation(p) -> str | None:
    """process: apply the switches. Returns the refusal message when the plan could not be applied."""
    generation = generation_for(p)
    if generation is None:
        return None
    if generation.record.refused is None:
        with own_work(generation, "activate"):
            generation.activate()
    return generation.record.refused


def before_hires(p) -> None:
    generation = generation_for(p)
    if generation is not None:
        with own_work(generation, "passes"):
            generation.before_hires()


def before_sampling(p) -> None:
    generation = generation_for(p)
    if generation is not None:
        with own_work(generation, "passes"):
            generation.before_sampling()


def after_sampling(p) -> None:
    generation = generation_for(p)
    if generation is not None:
        with own_work(generation, "passes"):
            generation.after_sampling()


def finish_generation(p) -> None:
    generation = generation_for(p)
    if generation is None:
        return
    Registry.active.remove(generation)
    with own_work(generation, "finish"):
        generation.finish()


def finish_all() -> None:
    """Restore every generation in progress, innermost first (script unload)."""
    for generation in reversed(list(Registry.active)):
        finish_generation(generation.p)


def sampling_generation() -> Generation | None:
    """The generation whose sampling pass is running (the CFG denoiser's callbacks have no `p`)."""
    return next((g for g in reversed(Registry.active) if g.in_pass), None)


def denoise(original, denoiser, *args):
    """CFGDenoiser.forward through the generation of the denoiser's `p` (if Speedkit runs it)."""
    generation = generation_for(getattr(denoiser, "p", None))
    if generation is not None and generation.failure is not None:
        raise generation.failure
    if generation is None or generation.guidance is None:
        return original(denoiser, *args)
    generation.steps.see(denoiser)
    return generation.guidance.denoise(original, denoiser, *args)


def on_cfg_denoised(params) -> None:
    generation = sampling_generation()
    if generation is not None and generation.guidance is not None:
        generation.guidance.record_similarity(params.x)


def last_record() -> GenerationRecord | None:
    return Registry.last


def active() -> bool:
    return bool(Registry.active)


def innermost() -> Generation | None:
    """The innermost generation in progress (None: none runs)."""
    return Registry.active[-1] if Registry.active else None
