"""Channels-last (NHWC) memory format for a UNet: weights and inputs.

`apply_channels_last` re-lays out every 4-D parameter and buffer in channels-last and converts
the UNet's input `x` the same way (forward pre-hook). Its undo gives every tensor back its exact
previous strides, whatever they were (contiguous, already channels-last, or mixed).
Quality/memory cost: see plan.ChannelsLastConfig.
"""

from __future__ import annotations

import torch

from . import module_walk
from .undo import SLOTS, Undo


def _four_d_tensors(unet: torch.nn.Module) -> list[torch.Tensor]:
    """Every 4-D parameter and buffer of `unet`, each once (read from the modules' own tables in one
    walk: `parameters()` and `buffers()` walked the UNet twice, 3.3 ms for an SD1.5 UNet)."""
    found = {  # by identity: a tensor two modules share counts once
        id(tensor): tensor
        for module in module_walk.modules(unet)
        for table in (module._parameters, module._buffers)
        if table
        for tensor in table.values()
        if tensor is not None and tensor.dim() == 4
    }
    return list(found.values())


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


def _needs_channels_last(tensor: torch.Tensor, stride: tuple[int, ...]) -> bool:
    return _channels_last_stride(tensor.shape) != stride and not tensor.is_contiguous(memory_format=torch.channels_last)


RELAYOUT_CHUNK_BYTES = 256 * 2**20
"""At most this much is copied aside at once while re-laying out (a transient extra)."""


def _chunks(pairs: list, limit: int | None = None) -> list[list]:
    """(tensor, stride) pairs in runs of at most `limit` bytes (RELAYOUT_CHUNK_BYTES)."""
    limit = RELAYOUT_CHUNK_BYTES if limit is None else limit
    chunks, current, size = [], [], 0
    for pair in pairs:
        nbytes = pair[0].numel() * pair[0].element_size()
        if current and size + nbytes > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += nbytes
    return chunks + ([current] if current else [])


STAGING_ALIGN_BYTES = 256
"""Where each tensor's copy starts in a chunk's staging buffer (any dtype's alignment)."""


def _staged_bytes(tensors: list[torch.Tensor]) -> list[int]:
    """Where each tensor's copy starts in a staging buffer, then the buffer's size (last entry)."""
    offsets = [0]
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        offsets.append(offsets[-1] + -(-nbytes // STAGING_ALIGN_BYTES) * STAGING_ALIGN_BYTES)
    return offsets


def _staging_views(tensors: list[torch.Tensor], buffer: torch.Tensor | None = None) -> list[torch.Tensor]:
    """A contiguous copy target per tensor (its shape and dtype), all views of one byte buffer on
    their device (`buffer`, or a new one): one allocation, where a copy per tensor made one each
    (most of them from the driver: the WebUI empties torch's cache after every generation)."""
    offsets = _staged_bytes(tensors)
    if buffer is None:
        buffer = torch.empty(offsets[-1], dtype=torch.uint8, device=tensors[0].device)
    return [
        buffer[offset : offset + tensor.numel() * tensor.element_size()].view(tensor.dtype).view(tensor.shape)
        for offset, tensor in zip(offsets[:-1], tensors, strict=True)
    ]


def _copy_all(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """Bit-exact copies (-0.0 and NaN payloads included), batched where torch can."""
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
    else:  # torch older than 2.1
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)


def _relayout_all(targets: list[tuple[torch.Tensor, tuple[int, ...]]]) -> None:
    """`_relayout` for many tensors, the dense ones (all of a UNet's weights) in three batched
    steps per device and chunk of at most RELAYOUT_CHUNK_BYTES: their values copied aside into a
    staging buffer, new strides over the same storage, the values copied back. One staging buffer
    per device serves every chunk in turn (the copies queue in order on one stream). Per tensor
    that was three dispatched operations and an allocation, about 10 ms for an SD1.5 UNet's 98
    4-D weights on a GPU, in each direction."""
    dense: dict[torch.device, list] = {}
    for tensor, stride in targets:
        if _is_dense(tensor):
            dense.setdefault(tensor.device, []).append((tensor, stride))
        else:
            _relayout(tensor, stride)
    for device, pairs in dense.items():
        chunks = _chunks(pairs)
        size = max(_staged_bytes([tensor for tensor, _ in chunk])[-1] for chunk in chunks)
        buffer = torch.empty(size, dtype=torch.uint8, device=device)
        for chunk in chunks:
            staged = _staging_views([tensor for tensor, _ in chunk], buffer)
            _copy_all(staged, [tensor.data for tensor, _ in chunk])
            for tensor, stride in chunk:
                tensor.data = tensor.data.as_strided(tensor.shape, stride)
            _copy_all([tensor.data for tensor, _ in chunk], staged)


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
    _relayout_all(
        [
            (tensor, _channels_last_stride(tensor.shape))
            for tensor, stride in previous
            if _needs_channels_last(tensor, stride)
        ]
    )
    hook = unet.register_forward_pre_hook(_input_to_channels_last)

    def restore() -> None:
        hook.remove()
        _relayout_all([(tensor, stride) for tensor, stride in previous if tensor.stride() != stride])

    return SLOTS.occupy(unet, "channels_last", restore, "channels-last")
