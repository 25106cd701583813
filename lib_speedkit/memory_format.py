"""Channels-last (NHWC) memory format for a UNet: weights and inputs.

`apply_channels_last` re-lays out every 4-D parameter and buffer in channels-last and converts
the UNet's input `x` the same way (forward pre-hook). Its undo gives every tensor back its exact
previous strides, whatever they were (contiguous, already channels-last, or mixed).
Quality/memory cost: see plan.ChannelsLastConfig.
"""

from __future__ import annotations

import torch

from .undo import SLOTS, Undo


def _four_d_tensors(unet: torch.nn.Module) -> list[torch.Tensor]:
    tensors = [p for p in unet.parameters() if p.dim() == 4]
    tensors += [b for b in unet.buffers() if b.dim() == 4]
    return tensors


def is_channels_last(unet: torch.nn.Module) -> bool:
    """True if every 4-D weight of `unet` is laid out channels-last (False when it has none)."""
    tensors = _four_d_tensors(unet)
    return bool(tensors) and all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


def _is_dense(tensor: torch.Tensor) -> bool:
    """True when the tensor covers its whole storage from offset 0 (contiguous in some order)."""
    return (
        tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        and (tensor.is_contiguous() or tensor.is_contiguous(memory_format=torch.channels_last))
    )


def _relayout(tensor: torch.Tensor, stride: tuple[int, ...]) -> None:
    """Give `tensor` exactly `stride`, same values. A dense tensor keeps its storage (same address:
    the UNet's CUDA graphs stay valid across generations), through a transient copy of it."""
    if _is_dense(tensor):
        values = tensor.data.clone()
        tensor.data = tensor.data.as_strided(tensor.shape, stride)
        tensor.data.copy_(values)
        return
    copy = torch.empty_strided(tensor.shape, stride, dtype=tensor.dtype, device=tensor.device)
    copy.copy_(tensor.data)
    tensor.data = copy


def _channels_last_stride(shape: torch.Size) -> tuple[int, ...]:
    _n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def _input_to_channels_last(module: torch.nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def apply_channels_last(unet: torch.nn.Module, enabled: bool = True) -> Undo:
    """Run `unet` channels-last; `enabled=False` changes nothing. Returns the undo."""
    if not enabled:
        return Undo.nothing("channels-last off")
    SLOTS.release(unet, "channels_last")
    previous = [(tensor, tensor.stride()) for tensor in _four_d_tensors(unet)]
    for tensor, _ in previous:
        target = _channels_last_stride(tensor.shape)
        if target != tensor.stride() and not tensor.is_contiguous(memory_format=torch.channels_last):
            _relayout(tensor, target)
    hook = unet.register_forward_pre_hook(_input_to_channels_last)

    def restore() -> None:
        hook.remove()
        for tensor, stride in previous:
            if tensor.stride() != stride:
                _relayout(tensor, stride)

    return SLOTS.occupy(unet, "channels_last", restore, "channels-last")
