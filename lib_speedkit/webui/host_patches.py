"""Speedkit's patches on the WebUI's own functions (through `modules.patches`, removable):

processing.process_images_inner  restore the generation in `finally` (success, error, OOM,
                                 interrupt: `postprocess` is skipped when sampling raises)
CFGDenoiser.forward              the guidance cutoff decides each call (webui/cutoff.py)
Api.init_script_args             invalid Speedkit args answer HTTP 422 before anything runs
"""

from __future__ import annotations

from collections.abc import Callable

from modules import patches, processing, sd_samplers_cfg_denoiser

from ..errors import PlanError, SpeedkitError
from ..script_args import ARG_NAMES, SCRIPT_TITLE, plan_from_args
from . import hooks
from .generation import check_plan_can_run

PATCH_KEY = "sd-webui-speedkit"
ARGS_SHAPE = f"a list of at most {len(ARG_NAMES)} values ({', '.join(ARG_NAMES)})"


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


def _validating_init_script_args(original):
    """Wrap the API's script-argument assembly: invalid Speedkit args -> HTTP 422, before anything runs."""

    def init_script_args(self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw):
        check_alwayson_shape(getattr(request, "alwayson_scripts", None))
        script_args = original(
            self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw
        )
        check_api_args(script_runner, script_args)
        return script_args

    return init_script_args


def _unprocessable(error: SpeedkitError):
    from fastapi import HTTPException

    return HTTPException(status_code=422, detail=f"speedkit: {error}")


def check_alwayson_shape(alwayson: object) -> None:
    """`alwayson_scripts.speedkit` must be {"args": [...]} with at most as many values as there
    are arguments (the host would crash on other shapes, or silently cut a long list)."""
    if not isinstance(alwayson, dict):
        return
    for name, entry in alwayson.items():
        if not isinstance(name, str) or name.lower() != SCRIPT_TITLE.lower():
            continue
        if not isinstance(entry, dict):
            raise _unprocessable(PlanError(f"alwayson_scripts.{name}", entry, 'an object {"args": [...]}'))
        args = entry.get("args", [])
        if not isinstance(args, list) or len(args) > len(ARG_NAMES):
            shown = f"{len(args)} values" if isinstance(args, list) else args
            raise _unprocessable(PlanError("args", shown, ARGS_SHAPE))


def check_api_args(script_runner, script_args) -> None:
    script = next((s for s in script_runner.alwayson_scripts if s.title() == SCRIPT_TITLE), None)
    if script is None:
        return
    try:
        plan = plan_from_args(script_args[script.args_from : script.args_to])
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
