"""Token merging (ToMe) on an ldm UNet, through `tomesd` (the package the WebUI itself uses).

tomesd patches the class of every `BasicTransformerBlock` and hooks the UNet's forward; its own
`remove_patch` leaves attributes behind (`_tome_info`, `disable_self_attn`). `apply_tome` records
those attributes first and its undo puts them back exactly, so the UNet ends as it started.
Quality/memory cost: see plan.TokenMergingConfig.
"""

from __future__ import annotations

import torch

from . import module_walk
from .errors import PatchConflict, SpeedkitError
from .plan import TokenMergingConfig
from .undo import SLOTS, Undo

_TOMESD_ATTRIBUTES = ("_tome_info", "disable_self_attn")
_MISSING = object()


class _LatentDiffusionShim(torch.nn.Module):
    """tomesd expects an object with `.model.diffusion_model`; this holds a bare UNet that way."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet


def has_tome_patch(unet: torch.nn.Module) -> bool:
    """True if any transformer block of `unet` currently runs ToMe (ours or someone else's)."""
    return any(type(module).__name__ == "ToMeBlock" for module in module_walk.modules(unet))


def _import_tomesd():
    try:
        import tomesd
    except ImportError as error:
        raise SpeedkitError("token merging needs the 'tomesd' package (pip install tomesd)") from error
    return tomesd


def _record_attributes(unet: torch.nn.Module) -> list[tuple[torch.nn.Module, str, object]]:
    return [
        (module, name, module.__dict__.get(name, _MISSING))
        for module in module_walk.modules(unet)
        for name in _TOMESD_ATTRIBUTES
    ]


def _restore_attributes(recorded: list[tuple[torch.nn.Module, str, object]]) -> None:
    for module, name, value in recorded:
        if value is _MISSING:
            module.__dict__.pop(name, None)
        else:
            module.__dict__[name] = value


def _device_of(unet: torch.nn.Module) -> torch.device:
    return next(unet.parameters()).device


def apply_tome(unet: torch.nn.Module, config: TokenMergingConfig) -> Undo:
    """Merge tokens in `unet` as `config` says; ratio 0 changes nothing. Returns the undo.

    Refuses (PatchConflict) when the UNet already runs a ToMe patch that Speedkit did not make:
    removing it would change the host's state behind its back.
    """
    if not config.enabled:
        return Undo.nothing("tome off")
    tomesd = _import_tomesd()
    SLOTS.release(unet, "tome")
    if has_tome_patch(unet):
        raise PatchConflict("the UNet already runs token merging applied by someone else (the WebUI's own ToMe?)")
    recorded = _record_attributes(unet)
    try:
        _patch(tomesd, unet, config)
    except BaseException:
        _remove(tomesd, unet, recorded)
        raise
    return SLOTS.occupy(unet, "tome", lambda: _remove(tomesd, unet, recorded), f"tome {config.ratio:g}")


def _patch(tomesd, unet: torch.nn.Module, config: TokenMergingConfig) -> None:
    tomesd.apply_patch(
        _LatentDiffusionShim(unet),
        ratio=config.ratio,
        max_downsample=config.max_downsample,
        sx=config.sx,
        sy=config.sy,
        use_rand=config.use_rand,
        merge_attn=True,
        merge_crossattn=False,
        merge_mlp=False,
    )
    if config.seed is not None:
        generator = torch.Generator(device=_device_of(unet)).manual_seed(config.seed)
        unet._tome_info["args"]["generator"] = generator


def _remove(tomesd, unet: torch.nn.Module, recorded) -> None:
    tomesd.remove_patch(unet)
    _restore_attributes(recorded)


def tome_settings_key(unet: torch.nn.Module) -> tuple:
    """The merging settings tomesd reads while the UNet runs (empty without ToMe), as a hashable
    key: a CUDA graph captures the merge for one setting, so graphs are keyed by it."""
    if not has_tome_patch(unet):
        return ()
    args = getattr(unet, "_tome_info", {}).get("args", {})
    return tuple(sorted((name, repr(value)) for name, value in args.items() if name != "generator"))
