"""Cross-attention backends for ldm/sgm `CrossAttention` modules.

Each backend computes exactly the attention of ldm's original forward (softmax(q·kᵀ·scale)·v with
the same projections and head layout); they differ in kernel, speed, memory and rounding:

  v1             original einsum attention, q·k and softmax in fp32 (also under autocast). Full
                 n×m matrix in memory.
  sdp            torch scaled_dot_product_attention, PyTorch picks the kernel.
  sdp-flash      SDPA restricted to the FlashAttention kernel (CUDA fp16/bf16; also CPU).
  sdp-efficient  SDPA restricted to the memory-efficient kernel (CUDA only).
  sdp-cudnn      SDPA restricted to the cuDNN kernel (recent CUDA GPUs only).
  sdp-math       SDPA restricted to the math kernel: deterministic, full matrix in memory.
  xformers       xformers.ops.memory_efficient_attention (when xformers imports and has a GPU).

A restricted kernel never falls back silently: when it cannot run for the device/dtype/head size,
`is_available()` says why, `apply()` refuses, and a call that hits it raises BackendUnavailable.

`apply(unet)` patches the `forward` of each attention module instance (matched by class name) and
returns an Undo that restores exactly what was there before. `module_forward()` gives the same
function for a host that installs forwards at class level.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import BackendUnavailable, SpeedkitError
from .plan import LIBRARY_BACKENDS
from .undo import SLOTS, Undo

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
ATTENTION_CLASS_NAMES = ("CrossAttention", "MemoryEfficientCrossAttention")
"""Class names of the ldm/sgm attention modules a backend replaces the forward of."""

_MISSING = object()
_PROBE_QUERY_TOKENS = 16
_PROBE_CONTEXT_TOKENS = 77


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run; `reason` says why not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


AVAILABLE = Availability(True)


def attention_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """The (name, module) pairs of every cross-/self-attention module in `model`."""
    for name, module in model.named_modules():
        if type(module).__name__ in ATTENTION_CLASS_NAMES:
            yield name, module


def head_dim_of(module: torch.nn.Module) -> int:
    """Size of one attention head of an ldm attention module."""
    return module.to_q.out_features // module.heads


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, _ = t.shape
    return t.view(batch, tokens, heads, -1).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * dim)


def _projections(module, x, context, context_transform=None):
    context = x if context is None else context
    context_k, context_v = context_transform(context) if context_transform else (context, context)
    pairs = ((module.to_q, x), (module.to_k, context_k), (module.to_v, context_v))
    return tuple(_split_heads(project(source), module.heads) for project, source in pairs)


def _scale_of(module, q: torch.Tensor) -> float:
    return getattr(module, "scale", q.shape[-1] ** -0.5)


def _check_extra_arguments(backend: str, kwargs: dict) -> None:
    """sgm's forward takes extra arguments; only their neutral values are supported."""
    if kwargs.get("additional_tokens") is not None or kwargs.get("n_times_crossframe_attn_in_self", 0):
        raise SpeedkitError(f"attention backend {backend!r} does not support additional_tokens/crossframe attention")


def _key_mask(mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """ldm's boolean key mask (b, ...) -> (b, 1, 1, keys), True = attend."""
    if mask is None:
        return None
    return mask.reshape(batch, -1)[:, None, None, :].to(torch.bool)


class AttentionBackend:
    """A named way to compute attention. Subclasses implement `_attend` and `_probe`."""

    name = ""
    summary = ""

    def is_available(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, head_dim: int | None = None
    ) -> Availability:
        """Can this backend run for the device/dtype/head size (defaults: this machine's GPU or CPU)."""
        device = torch.device(device) if device is not None else _default_device()
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        return self._probe(device, dtype, head_dim or 64)

    def _probe(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> Availability:
        return AVAILABLE

    def forward(
        self, module, x: torch.Tensor, context=None, mask=None, *, context_transform=None, upcast=False, **kwargs
    ) -> torch.Tensor:
        """The attention module's forward, computed with this backend.

        `context_transform(context) -> (context_k, context_v)` lets a host modify the keys' and
        values' context (the WebUI's hypernetworks); `upcast=True` computes attention in fp32
        (the WebUI's "upcast cross attention layer to float32" option).
        """
        _check_extra_arguments(self.name, kwargs)
        q, k, v = _projections(module, x, context, context_transform)
        dtype = q.dtype
        if upcast:
            q, k, v = q.float(), k.float(), v.float()
        out = self._attend(q, k, v, _key_mask(mask, x.shape[0]), _scale_of(module, q))
        return module.to_out(_merge_heads(out).to(dtype))

    def _attend(self, q, k, v, mask, scale) -> torch.Tensor:
        raise NotImplementedError

    def module_forward(self, context_transform=None, upcast=None):
        """A plain function `forward(module, x, context=None, mask=None, **kw)` for class-level patching.

        `context_transform` as in `forward`; `upcast` is a callable read at every call.
        """
        backend = self

        def forward(module, x, context=None, mask=None, **kwargs):
            wants_upcast = bool(upcast and upcast())
            return backend.forward(
                module, x, context, mask, context_transform=context_transform, upcast=wants_upcast, **kwargs
            )

        forward.speedkit_backend = self.name
        return forward

    def apply(self, unet: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> Undo:
        """Use this backend in every attention module of `unet`; returns the undo.

        `compute_dtype` is the dtype attention will run in (default: the modules' weight dtype;
        pass torch.float16 when the UNet runs under fp16 autocast). Refuses (BackendUnavailable)
        when the backend cannot run for any of the UNet's head sizes on its device.
        """
        self.require_runnable(unet, compute_dtype)
        modules = [module for _, module in attention_modules(unet)]
        SLOTS.release(unet, "attention")
        originals = [(module, module.__dict__.get("forward", _MISSING)) for module in modules]
        forward = self.module_forward()
        for module in modules:
            module.forward = types.MethodType(forward, module)

        def restore() -> None:
            for module, original in originals:
                if original is _MISSING:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = original

        return SLOTS.occupy(unet, "attention", restore, f"attention {self.name}")

    def require_runnable(self, unet: torch.nn.Module, compute_dtype: torch.dtype | None = None) -> None:
        """Raise BackendUnavailable unless this backend runs for every head size of `unet`."""
        modules = [module for _, module in attention_modules(unet)]
        if not modules:
            raise SpeedkitError("the UNet has no CrossAttention modules to patch")
        weight = modules[0].to_q.weight
        dtype = compute_dtype or weight.dtype
        for head_dim in sorted({head_dim_of(m) for m in modules}):
            availability = self.is_available(weight.device, dtype, head_dim)
            if not availability:
                raise BackendUnavailable(self.name, availability.reason)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class EinsumBackend(AttentionBackend):
    """ldm's original attention: explicit q·kᵀ (fp32), softmax (fp32), ·v."""

    name = "v1"
    summary = "original einsum attention (fp32 scores); full attention matrix in memory"

    def _attend(self, q, k, v, mask, scale):
        # Under autocast einsum would run in the low precision whatever the inputs: the scores
        # are computed with autocast off, as ldm's own forward does (_ATTN_PRECISION "fp32").
        with torch.autocast(device_type=q.device.type, enabled=False):
            scores = torch.einsum("bhid,bhjd->bhij", q.float(), k.float()) * scale
            if mask is not None:
                scores = scores.masked_fill(~mask, -torch.finfo(scores.dtype).max)
            weights = scores.softmax(dim=-1)
        return torch.einsum("bhij,bhjd->bhid", weights.to(v.dtype), v)


class SdpaBackend(AttentionBackend):
    """torch.nn.functional.scaled_dot_product_attention, optionally restricted to one kernel."""

    def __init__(self, name: str, kernel_name: str | None, summary: str):
        self.name = name
        self.kernel_name = kernel_name
        self.summary = summary

    def _kernel(self):
        from torch.nn.attention import SDPBackend

        return getattr(SDPBackend, self.kernel_name)

    def _attend(self, q, k, v, mask, scale):
        if self.kernel_name is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        from torch.nn.attention import sdpa_kernel

        try:
            with sdpa_kernel(self._kernel()):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        except RuntimeError as error:
            if isinstance(error, OUT_OF_MEMORY):
                raise  # out of memory is not "this kernel cannot run": callers handle it as such
            availability = self._probe(q.device, q.dtype, q.shape[-1])
            if availability:
                raise  # the kernel runs for this input: some other error, unchanged
            raise BackendUnavailable(self.name, availability.reason) from error

    def _probe(self, device, dtype, head_dim):
        if not hasattr(F, "scaled_dot_product_attention"):
            return Availability(False, "this PyTorch has no scaled_dot_product_attention (needs torch >= 2.0)")
        if self.kernel_name is None:
            return AVAILABLE
        return _probe_kernel(self.name, self.kernel_name, str(device), dtype, head_dim)


_CUDA_ONLY_KERNELS = {"EFFICIENT_ATTENTION": "memory-efficient", "CUDNN_ATTENTION": "cuDNN"}


@functools.cache
def _probe_kernel(backend: str, kernel_name: str, device: str, dtype: torch.dtype, head_dim: int) -> Availability:
    """Run one tiny call restricted to the kernel; report torch's own reasons when it refuses."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return Availability(False, "this PyTorch cannot select SDPA kernels (needs torch >= 2.3)")
    if not hasattr(SDPBackend, kernel_name):
        return Availability(False, f"this PyTorch has no {kernel_name} kernel")
    where = f"{dtype} on {device}, head size {head_dim}"
    if torch.device(device).type != "cuda" and kernel_name in _CUDA_ONLY_KERNELS:
        kernel = _CUDA_ONLY_KERNELS[kernel_name]
        return Availability(False, f"PyTorch's {kernel} kernel runs only on CUDA GPUs ({where})")
    try:
        q = torch.zeros(1, 1, _PROBE_QUERY_TOKENS, head_dim, device=device, dtype=dtype)
        kv = torch.zeros(1, 1, _PROBE_CONTEXT_TOKENS, head_dim, device=device, dtype=dtype)
    except (RuntimeError, TypeError) as error:
        return Availability(False, f"cannot create {where} tensors: {error}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(getattr(SDPBackend, kernel_name)):
                F.scaled_dot_product_attention(q, kv, kv)
        except RuntimeError as error:
            details = "; ".join(str(w.message).strip() for w in caught) or str(error).strip()
            return Availability(False, f"the {kernel_name} kernel cannot run for {where}: {details}")
    return AVAILABLE


class XformersBackend(AttentionBackend):
    """xformers.ops.memory_efficient_attention (needs xformers built for this torch and a GPU)."""

    name = "xformers"
    summary = "xformers memory-efficient attention (CUDA); not bit-deterministic"

    def _probe(self, device, dtype, head_dim):
        ops = _xformers_ops()
        if isinstance(ops, str):
            return Availability(False, ops)
        if device.type != "cuda":
            return Availability(False, f"xformers kernels run only on CUDA GPUs (asked for {device})")
        return AVAILABLE

    def _attend(self, q, k, v, mask, scale):
        if mask is not None:
            raise SpeedkitError("attention backend 'xformers' does not support attention masks")
        ops = _xformers_ops()
        if isinstance(ops, str):
            raise BackendUnavailable(self.name, ops)
        out = ops.memory_efficient_attention(
            q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous(), scale=scale
        )
        return out.transpose(1, 2)


@functools.lru_cache(maxsize=1)
def _xformers_ops():
    """xformers.ops, or the reason it cannot be used."""
    try:
        import xformers.ops as ops
    except Exception as error:  # noqa: BLE001 - a broken xformers raises many kinds of errors
        return f"xformers is not usable here: {type(error).__name__}: {error}"
    return ops


BACKENDS: dict[str, AttentionBackend] = {
    backend.name: backend
    for backend in (
        EinsumBackend(),
        SdpaBackend("sdp", None, "PyTorch SDPA, kernel chosen by PyTorch"),
        SdpaBackend("sdp-flash", "FLASH_ATTENTION", "PyTorch SDPA, FlashAttention kernel only"),
        SdpaBackend("sdp-efficient", "EFFICIENT_ATTENTION", "PyTorch SDPA, memory-efficient kernel only"),
        SdpaBackend("sdp-cudnn", "CUDNN_ATTENTION", "PyTorch SDPA, cuDNN kernel only"),
        SdpaBackend("sdp-math", "MATH", "PyTorch SDPA, math kernel only: deterministic, full attention matrix"),
        XformersBackend(),
    )
}
assert tuple(BACKENDS) == LIBRARY_BACKENDS, "plan.LIBRARY_BACKENDS must list the registry"


def get_backend(name: str) -> AttentionBackend:
    """The library backend called `name`; BackendUnavailable for host-only or unknown names."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(name, "not implemented by lib_speedkit (only the WebUI host provides it)") from None


def apply_attention(unet: torch.nn.Module, backend: str, compute_dtype: torch.dtype | None = None) -> Undo:
    """Switch `unet` to the named backend; "keep" changes nothing."""
    if backend == "keep":
        return Undo.nothing("attention keep")
    return get_backend(backend).apply(unet, compute_dtype)


def active_backend(unet: torch.nn.Module) -> str | None:
    """Name of the lib_speedkit backend patched into `unet`, or None."""
    names = {getattr(m.__dict__.get("forward"), "speedkit_backend", None) for _, m in attention_modules(unet)}
    names.discard(None)
    return names.pop() if len(names) == 1 else None
