"""The WebUI's built-in Hypertile, as the fast path sees it (no `modules.*` import: its state is
read from the modules it wraps).

Hypertile wraps the forward of some attention modules on the instance, once, and from then on
only flips its settings (`enabled`, tile and swap size, aspect ratio) on a params object per
module. On, it picks its tiles at random on every call: no graph may freeze that. Off, its
wrapper only calls the original forward: graphs may run, keyed on its settings, so turning it on
later (or changing a size) never replays a graph captured without it.
"""

from __future__ import annotations

import torch

from .. import module_walk

PARAMS_ATTRIBUTE = "__webui_hypertile_params"  # what hypertile_hook_model sets on each wrapped module


def hypertile_params(unet: torch.nn.Module) -> list:
    """The params object on each module Hypertile wrapped (an instance attribute: looked up in the
    module's own __dict__, since a missing attribute costs nn.Module an exception, and this runs
    over every module twice per sampling pass)."""
    return [
        params for module in module_walk.modules(unet) if (params := vars(module).get(PARAMS_ATTRIBUTE)) is not None
    ]


def is_hypertile_forward(_name: str, forward: object) -> bool:
    """True for Hypertile's wrapper (its closure holds a HypertileParams)."""
    closure = getattr(forward, "__closure__", None) or ()
    return any(type(cell.cell_contents).__name__ == "HypertileParams" for cell in closure)


def hypertile_blocker(unet: torch.nn.Module) -> str | None:
    if any(params.enabled for params in hypertile_params(unet)):
        return "Hypertile is on: it picks its tiles at random on every call, which a graph would freeze"
    return None


def hypertile_key(unet: torch.nn.Module) -> tuple:
    """Hypertile's settings on the UNet, for graph keys (empty where it never hooked the UNet)."""
    return tuple((p.layer_name, p.enabled, p.tile_size, p.swap_size, p.aspect_ratio) for p in hypertile_params(unet))
