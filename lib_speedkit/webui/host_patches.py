"""Speedkit's patches on the WebUI's own functions (through `modules.patches`, removable):

processing.process_images_inner  restore the generation in `finally` (success, error, OOM,
                                 interrupt: `postprocess` is skipped when sampling raises)
CFGDenoiser.forward              the guidance cutoff decides each call (webui/cutoff.py)
Api.init_script_args             invalid Speedkit args answer HTTP 422 before anything runs
"""

from __future__ import annotations

from collections.abc import Callable

from modules import patches, processing, sd_models, sd_samplers_cfg_denoiser

from ..errors import PlanError, SpeedkitError
from ..modes import MODE_NAMES, canonical_mode
from ..script_args import ARG_NAMES, DEFAULT_ARGS, MODE_INDEX, SCRIPT_TITLE, plan_from_args
from . import fast_path, hooks
from .availability import check_plan_can_run, unavailable_switches

PATCH_KEY = "sd-webui-speedkit"
ARGS_SHAPE = f"a list of at most {len(ARG_NAMES)} values ({', '.join(ARG_NAMES)})"
ENTRY_SHAPE = 'an object {"args": [...]} and/or {"mode": "Lossless"}'


def _process_images_inner(original):
    def process_images_inner(p):
        try:
            return original(p)
        finally:
            hooks.finish_generation(p)

    return process_images_inner


def _cfg_denoiser_forward(original):
    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        return hooks.denoise(original, self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)

    return forward


def _unload_model_weights(original):
    """Unloading the checkpoint (to RAM or entirely) gives the graphs' memory back too."""

    def unload_model_weights(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            fast_path.release_graphs()

    return unload_model_weights


def _validating_init_script_args(original):
    """Wrap the API's script-argument assembly: invalid Speedkit args -> HTTP 422, before anything runs."""

    def init_script_args(self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw):
        entry = speedkit_entry(getattr(request, "alwayson_scripts", None))
        script_args = original(
            self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw
        )
        if entry is not None:
            complete_from_spec(script_runner, script_args, entry)
        check_api_args(script_runner, script_args)
        return script_args

    return init_script_args


def _unprocessable(error: SpeedkitError):
    from fastapi import HTTPException

    return HTTPException(status_code=422, detail=f"speedkit: {error}")


def speedkit_entry(alwayson: object) -> dict | None:
    """`alwayson_scripts.speedkit`, checked: {"args": [...]} with at most as many values as there
    are arguments and/or {"mode": "<mode>"} (the host would crash on other shapes, or silently cut
    a long list); None when the request does not mention Speedkit."""
    if not isinstance(alwayson, dict):
        return None
    for name, entry in alwayson.items():
        if not isinstance(name, str) or name.lower() != SCRIPT_TITLE.lower():
            continue
        if not isinstance(entry, dict):
            raise _unprocessable(PlanError(f"alwayson_scripts.{name}", entry, ENTRY_SHAPE))
        args = entry.get("args", [])
        if not isinstance(args, list) or len(args) > len(ARG_NAMES):
            shown = f"{len(args)} values" if isinstance(args, list) else args
            raise _unprocessable(PlanError("args", shown, ARGS_SHAPE))
        if "mode" in entry and canonical_mode(entry["mode"]) is None:
            raise _unprocessable(PlanError("mode", entry["mode"], "one of: " + ", ".join(MODE_NAMES)))
        return entry
    return None


def complete_from_spec(script_runner, script_args: list, entry: dict) -> None:
    """What the client did not send takes the documented default (the API table), not the UI's
    current one: a client sending 14 values from before speed modes existed gets `Custom`, and
    a default mode chosen in Settings does not override its switches. {"mode": ...} alone is
    Speedkit on in that mode."""
    script = _our_script(script_runner)
    if script is None:
        return
    given = len(entry.get("args", []))
    for index in range(given, len(ARG_NAMES)):
        script_args[script.args_from + index] = DEFAULT_ARGS[index]
    if "mode" in entry:
        script_args[script.args_from + MODE_INDEX] = canonical_mode(entry["mode"])
        if given == 0:
            script_args[script.args_from] = True


def _our_script(script_runner):
    return next((s for s in script_runner.alwayson_scripts if s.title() == SCRIPT_TITLE), None)


def check_api_args(script_runner, script_args) -> None:
    script = _our_script(script_runner)
    if script is None:
        return
    try:
        plan = plan_from_args(script_args[script.args_from : script.args_to], unavailable=unavailable_switches())
        if plan is not None:
            check_plan_can_run(plan)
    except SpeedkitError as error:
        raise _unprocessable(error) from None


def _targets() -> tuple[tuple[object, str, Callable], ...]:
    from modules.api import api

    return (
        (processing, "process_images_inner", _process_images_inner),
        (sd_samplers_cfg_denoiser.CFGDenoiser, "forward", _cfg_denoiser_forward),
        (api.Api, "init_script_args", _validating_init_script_args),
        (sd_models, "unload_model_weights", _unload_model_weights),
    )


def install_patches() -> None:
    for owner, name, make_wrapper in _targets():
        if patches.original(PATCH_KEY, owner, name) is None:
            patches.patch(PATCH_KEY, owner, name, make_wrapper(getattr(owner, name)))


def remove_patches() -> None:
    for owner, name, _ in _targets():
        if patches.original(PATCH_KEY, owner, name) is not None:
            patches.undo(PATCH_KEY, owner, name)


def patches_removed() -> Callable[[], None]:
    """Take the extension's patches out (as if it were not installed); returns the function
    putting them back. The bench uses it to measure what the extension costs when off."""
    if hooks.active():
        raise SpeedkitError("a Speedkit generation is running")
    remove_patches()
    return install_patches
