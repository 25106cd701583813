"""The fast path in the WebUI: when a sampling pass may replay the UNet from CUDA graphs or bypass
the Lora built-in's layer wrappers (the lean step), and what graphs are keyed on.

Both are decided per sampling pass, once its networks are loaded, and taken off right after it
(nothing of a pass runs during decoding, the next batch's prompt work or a nested generation).
A graph could be wrong — and the pass runs eagerly, with the reason as a note — when:
  * the WebUI does not run on CUDA, or moves the UNet between CPU and GPU (--medvram/--lowvram:
    a graph would read the addresses of freed weights);
  * LoRA/other networks are loaded, or a previous LoRA's weights are still to be restored (the
    built-in's per-layer code must run), or hypernetworks are loaded;
  * random ToMe draws new destinations on every call;
  * another UNet implementation is active (Settings → SD Unet);
  * Hypertile is on (it tiles at random on every call); while it is installed but off, its
    settings are part of the key;
  * any other code replaced a UNet module's forward on the instance (its Python state is
    invisible to a key).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from modules import lowvram, patches, shared

from ..cuda_graph import GraphCache, module_fingerprint
from ..plan import TokenMergingConfig
from ..tome import tome_settings_key
from .attention import current_backend_title
from .hypertile import hypertile_blocker, hypertile_key

GRAPHS = GraphCache()
"""The process's CUDA graphs of the UNet (released on model load, unload and when a generation
runs without the switch, unless a bench matrix keeps them)."""

LORA_WRAPPED_FORWARDS = (
    (torch.nn.Linear, "network_Linear_forward"),
    (torch.nn.Conv2d, "network_Conv2d_forward"),
    (torch.nn.GroupNorm, "network_GroupNorm_forward"),
    (torch.nn.LayerNorm, "network_LayerNorm_forward"),
    (torch.nn.MultiheadAttention, "network_MultiheadAttention_forward"),
)
LORA_PATCH_KEY = "lora_patches"  # the key the Lora built-in patches torch.nn classes under


class _Keep:
    graphs = False


def lora_builtin():
    """The Lora built-in's `networks` module, or None when it is not loaded (disabled)."""
    module = sys.modules.get("networks")
    if module is None or not hasattr(module, "loaded_networks") or not hasattr(module, "network_Linear_forward"):
        return None
    return module


def lora_weights_still_applied() -> bool:
    """True while some layer still carries a network's weights (the wrappers restore them on the
    next call, so they must run once)."""
    return any(getattr(module, "network_current_names", ()) for module in shared.sd_model.modules())


@dataclass(frozen=True)
class PassNetworks:
    """The Lora built-in's state for one sampling pass (looked at once, for both switches)."""

    networks: object | None
    blocker: str | None  # why this pass must run the built-in's layer code

    @classmethod
    def now(cls) -> PassNetworks:
        networks = lora_builtin()
        if networks is not None and networks.loaded_networks:
            count = len(networks.loaded_networks)
            return cls(networks, f"{count} LoRA/network(s) loaded (their layer code runs on every call)")
        if lora_weights_still_applied():
            return cls(networks, "a previous LoRA's weights are restored on this pass")
        return cls(networks, None)

    def lean_blocker(self) -> str | None:
        if self.networks is None:
            return "the Lora built-in is not loaded, there is nothing to bypass"
        return self.blocker

    def wrapped_forwards(self) -> list[tuple[type, object, object]]:
        """(class, the built-in's wrapper, the original it keeps) for each class it wraps."""
        found = []
        for cls, wrapper_name in LORA_WRAPPED_FORWARDS:
            wrapper = getattr(self.networks, wrapper_name, None)
            original = patches.original(LORA_PATCH_KEY, cls, "forward")
            if wrapper is not None and original is not None:
                found.append((cls, wrapper, original))
        return found


def graph_blocker(unet: torch.nn.Module, tome: TokenMergingConfig | None, networks: PassNetworks) -> str | None:
    """Why this sampling pass cannot be replayed from CUDA graphs (None: it can)."""
    from modules import sd_unet

    if lowvram.is_enabled(shared.sd_model):
        return "--medvram/--lowvram move the UNet between CPU and GPU, and a graph would read freed weights"
    if shared.device.type != "cuda":
        return f"the WebUI runs on {shared.device.type}, CUDA graphs need a CUDA device"
    if networks.blocker is not None:
        return networks.blocker
    if shared.loaded_hypernetworks:
        return "hypernetworks loaded"
    if tome is not None and tome.use_rand:
        return "random ToMe draws new destinations on every call"
    if sd_unet.current_unet is not None:
        return f"another UNet implementation is active ({sd_unet.current_unet_option.label})"
    return hypertile_blocker(unet)


def graph_context_key(unet: torch.nn.Module) -> tuple:
    """What the graphs of this pass depend on beyond their call arguments."""
    return (
        id(unet),
        module_fingerprint(unet),
        tome_settings_key(unet),
        current_backend_title(),
        bool(shared.opts.upcast_attn),
        hypertile_key(unet),
    )


def release_graphs(*_args) -> None:
    """Give the graphs' memory back (model load, unload, a generation without the switch)."""
    if len(GRAPHS) or GRAPHS.failed:
        GRAPHS.release()
        GRAPHS.forget_failures()


def release_unless_kept() -> None:
    if not _Keep.graphs:
        release_graphs()


@contextmanager
def keeping_graphs() -> Iterator[None]:
    """While inside, generations without the switch keep the graphs (a bench matrix alternating
    switches measures the steady state); released at the end."""
    _Keep.graphs = True
    try:
        yield
    finally:
        _Keep.graphs = False
        release_graphs()
