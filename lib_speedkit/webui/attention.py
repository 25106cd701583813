"""Attention through the host: the WebUI's optimizer list, switching by title, and the library's
SDPA kernel variants registered with it as optimizers (Settings → Optimizations lists them too).

Switching goes through `sd_hijack.model_hijack.apply_optimizations(title)`, which patches the
ldm/sgm CrossAttention classes; unknown titles silently fall back there, so names are resolved
to titles first and a refusal carries the reason.
"""

from __future__ import annotations

import importlib.util

import torch
from modules import devices, sd_hijack, shared

from .. import attention as attention_lib
from ..errors import BackendUnavailable
from ..plan import ATTENTION_CHOICES, KEEP, canonical_backend_name

KERNEL_VARIANTS = ("sdp-flash", "sdp-efficient", "sdp-cudnn", "sdp-math")
"""Library backends the host lacks; registered with it as optimizers."""
FORGE_NOTE = (
    "Forge detected: it picks the attention backend at start-up and computes guidance in its own "
    "sampling function, so Speedkit's attention and guidance-cutoff choices are disabled here."
)


def is_forge() -> bool:
    """True inside stable-diffusion-webui-forge, where attention cannot be switched per generation."""
    return importlib.util.find_spec("modules_forge") is not None


def host_backend_titles() -> dict[str, str]:
    """Canonical backend name -> the host's optimizer title, for every backend the host offers now."""
    from modules import shared_items

    titles = shared_items.cross_attention_optimizations()
    return {canonical_backend_name(title): title for title in titles if title != "Automatic"}


def unet_compute_dtype() -> torch.dtype:
    """The dtype the UNet's attention computes in (fp32 with --no-half or the upcast option)."""
    if shared.opts.upcast_attn:
        return torch.float32
    return devices.dtype_unet


def unavailable_backends() -> dict[str, str]:
    """Backend name -> why it cannot be used in this WebUI now (for every name the plan allows)."""
    if is_forge():
        return {name: FORGE_NOTE for name in ATTENTION_CHOICES if name != KEEP}
    offered = host_backend_titles()
    return {name: _unavailable_reason(name) for name in ATTENTION_CHOICES if name != KEEP and name not in offered}


def _unavailable_reason(name: str) -> str:
    if name in KERNEL_VARIANTS:
        reason = attention_lib.BACKENDS[name].is_available(shared.device, unet_compute_dtype()).reason
        return reason or "not registered with the WebUI"
    if name == "xformers":
        return "the WebUI offers xformers only when started with --xformers (and a supported NVIDIA GPU)"
    if name == "v1":
        return "the WebUI does not list 'V1 - original v1' here"
    return "the WebUI does not offer this backend here"


def backend_choices() -> list[str]:
    """Dropdown values: keep, then every backend name (unavailable ones are marked by the UI)."""
    return list(ATTENTION_CHOICES)


def make_kernel_optimizers() -> list:
    """SdOptimization objects for the library's SDPA kernel variants (for on_list_optimizers)."""
    import ldm.modules.attention
    import ldm.modules.diffusionmodules.model
    import sgm.modules.attention
    import sgm.modules.diffusionmodules.model
    from modules import sd_hijack_optimizations
    from modules.hypernetworks import hypernetwork

    def hypernetwork_context(context):
        return hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)

    class SpeedkitKernelOptimization(sd_hijack_optimizations.SdOptimization):
        priority = -1  # never picked by "Automatic"

        def __init__(self, backend: attention_lib.AttentionBackend):
            self.backend = backend
            self.name = backend.name
            self.label = f"{backend.summary} (Speedkit)"

        def is_available(self):
            return bool(self.backend.is_available(shared.device, unet_compute_dtype()))

        def apply(self):
            forward = self.backend.module_forward(hypernetwork_context, lambda: shared.opts.upcast_attn)
            ldm.modules.attention.CrossAttention.forward = forward
            sgm.modules.attention.CrossAttention.forward = forward
            # The VAE's attention blocks use the host's SDPA forward.
            ldm.modules.diffusionmodules.model.AttnBlock.forward = sd_hijack_optimizations.sdp_attnblock_forward
            sgm.modules.diffusionmodules.model.AttnBlock.forward = sd_hijack_optimizations.sdp_attnblock_forward

    return [SpeedkitKernelOptimization(attention_lib.BACKENDS[name]) for name in KERNEL_VARIANTS]


def current_backend_title() -> str:
    """Title of the host's attention optimizer now ("None" when disabled)."""
    optimizer = sd_hijack.current_optimizer
    return optimizer.title() if optimizer is not None else "None"


def switch_title(title: str) -> None:
    sd_hijack.model_hijack.apply_optimizations(title)


def resolve_backend(name: str) -> str:
    """The host title for backend `name`, or BackendUnavailable with the reason."""
    titles = host_backend_titles()
    if name not in titles:
        raise BackendUnavailable(name, unavailable_backends().get(name, "the WebUI does not offer it"))
    return titles[name]


def check_backend_runnable(name: str) -> None:
    """For a library kernel variant: refuse unless it runs for the loaded UNet's head sizes."""
    if name in KERNEL_VARIANTS and shared.sd_model is not None:
        attention_lib.BACKENDS[name].require_runnable(shared.sd_model.model.diffusion_model, unet_compute_dtype())
