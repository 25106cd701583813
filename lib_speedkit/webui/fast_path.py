"""The fast path in the WebUI: when a sampling pass may replay the UNet from CUDA graphs or bypass
the Lora built-in's layer wrappers (the lean step), and what graphs are keyed on.

Both are decided per sampling pass, once its networks are loaded, and taken off right after it
(nothing of a pass runs during decoding, the next batch's prompt work or a nested generation).

LoRAs: the Lora built-in merges a network's weights into each layer's own tensors (in place) the
first time the layer runs with that network set, and restores them from its backup when the set
changes; its per-layer wrapper only checks for that. So before a fast pass Speedkit has the
built-in bring every UNet layer up to date (`PassNetworks.apply_weights`), and the pass may then
skip the wrappers and replay graphs that read the merged weights: the same numbers as eager.

A graph could be wrong — and the pass runs eagerly, with the reason as a note — when:
  * the WebUI does not run where the graphs are captured (CUDA), or moves the UNet between CPU
    and GPU (--medvram/--lowvram: a graph would read the addresses of freed weights);
  * the built-in computes networks on every call (Settings → `lora_functional`), or
    hypernetworks are loaded;
  * random ToMe draws new destinations on every call;
  * another UNet implementation is active (Settings → SD Unet);
  * Hypertile is on (it tiles at random on every call); while it is installed but off, its
    settings are part of the key;
  * any other code replaced a UNet module's forward on the instance (its Python state is
    invisible to a key).

Graphs stay cached across generations, also those without the switch (toggling costs nothing),
within a memory budget (Settings → Speedkit); they are released on model load and unload.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from modules import lowvram, patches, shared

from .. import module_walk
from ..cuda_graph import GraphCache, module_fingerprint
from ..plan import TokenMergingConfig
from ..tome import tome_settings_key
from ..undo import Undo
from .attention import current_backend_title
from .hypertile import hypertile_blocker, hypertile_key
from .sgm_unet import timestep_embedding

GRAPHS = GraphCache()
"""The process's CUDA graphs of the UNet (released on model load and unload)."""
GRAPH_BUDGET_OPTION = "speedkit_graph_budget_mb"
DEFAULT_GRAPH_BUDGET_MB = 512

LORA_WRAPPED_FORWARDS = (
    (torch.nn.Linear, "network_Linear_forward"),
    (torch.nn.Conv2d, "network_Conv2d_forward"),
    (torch.nn.GroupNorm, "network_GroupNorm_forward"),
    (torch.nn.LayerNorm, "network_LayerNorm_forward"),
    (torch.nn.MultiheadAttention, "network_MultiheadAttention_forward"),
)
LORA_PATCH_KEY = "lora_patches"  # the key the Lora built-in patches torch.nn classes under


def lora_builtin():
    """The Lora built-in's `networks` module, or None when it is not loaded (disabled)."""
    module = sys.modules.get("networks")
    if module is None or not hasattr(module, "loaded_networks") or not hasattr(module, "network_Linear_forward"):
        return None
    return module


@dataclass(frozen=True)
class PassNetworks:
    """The Lora built-in's state for one sampling pass (looked at once, for both switches)."""

    networks: object | None
    blocker: str | None  # why this pass must run the built-in's layer code on every call

    @classmethod
    def now(cls) -> PassNetworks:
        networks = lora_builtin()
        if networks is not None and getattr(shared.opts, "lora_functional", False):
            return cls(networks, "the Lora built-in computes networks on every call (Settings: lora_functional)")
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

    def apply_weights(self, unet: torch.nn.Module) -> None:
        """Bring every layer of the UNet up to date with the loaded networks, as its wrapper does
        on its first call: merge the networks' weights in, or restore the layer's own."""
        if self.networks is None or self.blocker is not None:
            return
        classes = tuple(cls for cls, _name in LORA_WRAPPED_FORWARDS)
        for module in module_walk.modules(unet):
            if isinstance(module, classes):
                self.networks.network_apply_weights(module)


def graphs_run_on_this_device() -> bool:
    """The WebUI runs where the graph cache captures (CUDA; the tests' stand-in: the CPU)."""
    return shared.device.type == GRAPHS.capturer.device_type


def graph_blocker(unet: torch.nn.Module, tome: TokenMergingConfig | None, networks: PassNetworks) -> str | None:
    """Why this sampling pass cannot be replayed from CUDA graphs (None: it can)."""
    from modules import sd_unet

    if lowvram.is_enabled(shared.sd_model):
        return "--medvram/--lowvram move the UNet between CPU and GPU, and a graph would read freed weights"
    if not graphs_run_on_this_device():
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


def set_graph_budget() -> None:
    """The graphs' memory budget from Settings → Speedkit (MB)."""
    budget = getattr(shared.opts, GRAPH_BUDGET_OPTION, DEFAULT_GRAPH_BUDGET_MB)
    GRAPHS.max_bytes = int(budget) * 2**20 if budget else None


def release_graphs(*_args) -> None:
    """Give the graphs' memory back (model load, unload)."""
    if len(GRAPHS) or GRAPHS.failed:
        GRAPHS.release()
        GRAPHS.forget_failures()


def graphable_sgm_unet() -> Undo:
    """For a graphed SDXL pass: sgm's timestep embedding without its CPU-to-device copy (with the
    WebUI's own cast of the result, its `timestep_embedding_cast_result`)."""
    module = sys.modules.get("sgm.modules.diffusionmodules.openaimodel")
    if module is None or not getattr(shared.sd_model, "is_sdxl", False):
        return Undo.nothing("not an sgm UNet")
    from modules import devices

    def embedding(timesteps, *args, **kwargs):
        upcast = devices.unet_needs_upcast and timesteps.dtype == torch.int64
        return timestep_embedding(timesteps, *args, **kwargs).to(torch.float32 if upcast else devices.dtype_unet)

    previous = module.timestep_embedding
    module.timestep_embedding = embedding

    def restore() -> None:
        if module.timestep_embedding is embedding:
            module.timestep_embedding = previous

    return Undo(restore, "sgm timestep embedding on the device")
