"""Opening checkpoints and VAEs: `.safetensors` lazily, `.ckpt`/`.pt`/`.pth` through torch's safe loader.

Pickled files are read with `torch.load(weights_only=True)`, which unpickles only tensors, plain
containers and numbers. A pickle that needs anything else (a PyTorch Lightning callback, a custom
class, or code) is refused, naming `allow_unsafe_pickle`; allowing it runs `torch.load` with
`weights_only=False`, as the WebUI does with `--disable-safe-unpickle`. Zip-format pickles are
memory-mapped (`mmap=True`), so their tensors are paged in from the file as they are used.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .safetensors_io import SlimError, TensorInfo, read_tensors

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNSAFE_HINT = "if you trust the file, allow it with allow_unsafe_pickle"


class UnsafePickleRefused(SlimError):
    """A pickle needs more than tensors: reading it could run code. `refusal` is the message
    without the hint on how to allow it, which each host (CLI, WebUI) words its own way."""

    def __init__(self, refusal: str):
        self.refusal = refusal
        super().__init__(f"{refusal}; {UNSAFE_HINT}")


@dataclass
class Checkpoint:
    """The tensors of one file (lazy where possible) and what was left behind reading it."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # non-tensor entries and training state


def open_checkpoint(
    path: str | Path, allow_unsafe_pickle: bool = False, what: str = "input", torch_load: Callable = torch.load
) -> Checkpoint:
    """Open a checkpoint or VAE file; SlimError (starting with `what`) when it cannot be used.

    `torch_load`: PyTorch's own loader. A host that replaces `torch.load` with a checker of its
    own (the WebUI's safe unpickler returns None for what it refuses) passes the original here;
    this module's `weights_only` rule is the check."""
    path = Path(path)
    if not path.is_file():
        raise SlimError(f"{what}: {path} is not a file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            tensors, metadata = read_tensors(path)
        except SlimError as error:
            raise SlimError(f"{what}: {error}") from None
        return Checkpoint(path, tensors, metadata)
    if suffix in PICKLE_SUFFIXES:
        return _open_pickle(path, allow_unsafe_pickle, what, torch_load)
    allowed = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
    raise SlimError(f"{what}: {path.name} has the extension {suffix or '(none)'!r}; expected one of {allowed}")


def _torch_load(path: Path, allow_unsafe_pickle: bool, what: str, torch_load: Callable):
    try:
        try:
            return torch_load(path, map_location="cpu", weights_only=not allow_unsafe_pickle, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # legacy (pre-zip) serialisation cannot be memory-mapped
            return torch_load(path, map_location="cpu", weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            reason = _first_reason(str(error))
            raise UnsafePickleRefused(
                f"{what}: {path.name} needs more than tensors to unpickle ({reason}): refused, because unpickling "
                "it could run code"
            ) from None
        raise SlimError(f"{what}: {path.name} is not a readable checkpoint ({error})") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError, AttributeError, ImportError) as error:
        raise SlimError(f"{what}: {path.name} is not a readable checkpoint ({type(error).__name__}: {error})") from None


def _first_reason(message: str) -> str:
    """The informative line of torch's long weights_only error."""
    for line in message.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip()
    return message.splitlines()[0].strip()


def _open_pickle(path: Path, allow_unsafe_pickle: bool, what: str, torch_load: Callable) -> Checkpoint:
    loaded = _torch_load(path, allow_unsafe_pickle, what, torch_load)
    if not isinstance(loaded, dict):
        raise SlimError(f"{what}: {path.name} holds a {type(loaded).__name__}, not a state dict")
    skipped = []
    state = loaded
    if isinstance(loaded.get("state_dict"), dict):  # PyTorch Lightning wrapping, as the WebUI unwraps it
        state = loaded["state_dict"]
        skipped = [f"{key} (training state outside state_dict)" for key in loaded if key != "state_dict"]
    tensors = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[str(name)] = TensorInfo(str(name), value.dtype, tuple(value.shape), lambda value=value: value)
        else:
            skipped.append(f"{name} (a {type(value).__name__}, not a tensor)")
    return Checkpoint(path, tensors, {}, skipped)
