"""The safetensors format, read lazily and written as a stream (no `safetensors` package needed).

Format (https://github.com/huggingface/safetensors, "Format" in its README): an 8-byte little-endian
header length N, N bytes of JSON (`{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}`, padded with spaces), then the tensors' raw little-endian bytes; offsets
are relative to the end of the header and must tile the data area exactly.

The `safetensors` package has no streaming writer, so a whole state dict would have to sit in memory.
Here every tensor's dtype and shape are known before any data is produced, so the header is written
first and each tensor is converted, written and released one at a time: memory stays at about two
copies of the largest tensor. The output goes to a temporary file that replaces the target only
when complete (`atomic_output`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SpeedkitError

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors package enforces too


class SlimError(SpeedkitError, ValueError):
    """A file or an option of the slimming tool is not usable; the message names which."""


def nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a file: its dtype and shape, and how to read it (lazily)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, self.shape)


def _corrupt(path: Path, why: str) -> SlimError:
    return SlimError(f"{path}: not a valid safetensors file ({why})")


def read_header(path: Path) -> tuple[dict, dict[str, str], int]:
    """(tensor entries, metadata, data start) of a safetensors file; SlimError when it is not one."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise _corrupt(path, f"{size} bytes, shorter than the 8-byte header length")
        length = int.from_bytes(prefix, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise _corrupt(path, f"header length {length} does not fit in a file of {size} bytes")
        try:
            header = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _corrupt(path, f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - length
    for name, entry in header.items():
        _check_entry(path, name, entry, data_size)
    return header, {str(k): str(v) for k, v in metadata.items()}, 8 + length


def _check_entry(path: Path, name: str, entry: object, data_size: int) -> None:
    if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
        raise _corrupt(path, f"tensor {name!r} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _corrupt(path, f"tensor {name!r} has a bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _corrupt(path, f"tensor {name!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    expected = nbytes(DTYPES[entry["dtype"]], tuple(shape))
    if not 0 <= begin <= end <= data_size or end - begin != expected:
        raise _corrupt(path, f"tensor {name!r} lies outside the file or has the wrong size (truncated?)")


def read_tensors(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Lazy view of a safetensors file: nothing but the header is read until `TensorInfo.load()`."""
    header, metadata, data_start = read_header(path)
    tensors = {}
    for name, entry in header.items():
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin = data_start + entry["data_offsets"][0]
        tensors[name] = TensorInfo(name, dtype, shape, _loader(path, begin, dtype, shape))
    return tensors, metadata


def _loader(path: Path, begin: int, dtype: torch.dtype, shape: tuple[int, ...]) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        size = nbytes(dtype, shape)
        if size == 0:
            return torch.empty(shape, dtype=dtype)
        buffer = bytearray(size)
        with open(path, "rb") as file:
            file.seek(begin)
            if file.readinto(buffer) != size:
                raise _corrupt(path, "file ended inside a tensor (truncated?)")
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

    return load


def build_header(items: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    """The header (length prefix + space-padded JSON) for tensors written in `items` order."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    offset = 0
    for name, dtype, shape in items:
        size = nbytes(dtype, shape)
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_stream(
    file,
    items: list[tuple[str, torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str],
) -> None:
    """Write a safetensors file: the header, then `produce(name)` for each item, one at a time."""
    file.write(build_header(items, metadata))
    for name, dtype, shape in items:
        tensor = produce(name)
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise SlimError(f"internal error: {name} is {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
        if tensor.numel():
            file.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
        del tensor


def temporary_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.partial")


@contextmanager
def atomic_output(target: Path, overwrite: bool) -> Iterator:
    """A binary file object that becomes `target` only if the block completes.

    The data goes to a hidden temporary file beside the target (same file system, so the final
    `os.replace` is atomic); on any exception, KeyboardInterrupt included, the temporary file is
    removed and the target is left as it was.
    """
    if target.exists() and not overwrite:
        raise SlimError(f"output: {target} exists; choose another suffix or allow overwriting")
    partial = temporary_name(target)
    try:
        with open(partial, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if target.exists() and not overwrite:  # appeared while we were writing
            raise SlimError(f"output: {target} appeared while writing; not replaced")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
