"""The compiled UNet in the WebUI: the process's compiler, where inductor and triton keep their
on-disk caches (under the WebUI's data folder, so a restart finds its compiled kernels), the
progress text while a shape is prepared, and what the status route reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from modules import paths_internal, shared

from ..compiled import Compiler, compile_support
from ..cuda_graph import GraphCache, TensorSpec

COMPILER = Compiler()
"""The process's compiled UNet forwards (dropped on model load and unload)."""
CACHE_FOLDER = Path("cache") / "speedkit-compile"
VAE_DECODER = "vae decoder"
"""The Compiler's name of the VAE decoder's forward (webui/vae_decoder.py)."""


def use_cache_folders() -> None:
    """inductor's on-disk cache (triton's kernels go inside it) under the WebUI's data folder,
    unless the user chose a folder: a restart compiles a known shape from there instead of from
    scratch, and the system's temp folder (torch's default, which it writes into the environment
    the first time it looks) may be emptied at boot."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(torch_default_cache()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(paths_internal.data_path) / CACHE_FOLDER / "inductor")


def torch_default_cache() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # an older torch: it has no default to tell apart
        return ""
    return default_cache_dir()


def compile_blocker() -> str | None:
    return compile_support()


def announce(what, args: tuple) -> None:
    """Compiler.announce: say in the progress text what is being compiled, for which shape."""
    latent = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4), None)
    size = (
        f"{latent.shape[3] * 8}×{latent.shape[2] * 8}, batch {latent.shape[0]}" if latent is not None else "a new shape"
    )
    part = "the VAE decoder" if what == VAE_DECODER else "the UNet"
    shared.state.textinfo = (
        f"Speedkit: compiling {part} for {size} (first time only, about a minute; "
        "Interrupt runs this generation without it)"
    )


def interrupted() -> bool:
    """Compiler.interrupted: the WebUI's Interrupt or Skip was pressed during the generation."""
    return bool(shared.state.interrupted or shared.state.skipped)


def connect() -> None:
    """The process's compiler reports its compiles in the progress text and stops waiting for one
    when the user interrupts."""
    COMPILER.announce = announce
    COMPILER.interrupted = interrupted


def disconnect() -> None:
    COMPILER.announce = lambda what, args: None
    COMPILER.interrupted = lambda: False


def release(*_args) -> None:
    COMPILER.forget()


def described(what) -> str:
    """A compiled forward's name for people: the UNet, the VAE decoder, or DeepCache's full or
    shallow step of a branch (the graph's tag, as DeepCache names its steps)."""
    if what in (None, "forward"):
        return "UNet"
    if what == VAE_DECODER:
        return "VAE decoder"
    if isinstance(what, tuple) and len(what) == 3:
        return f"DeepCache {what[1]} step, branch {what[2]}"
    return str(what)


def compiled_graphs(graphs: GraphCache) -> list[dict]:
    """The cached graphs of compiled forwards: what was compiled (the UNet, or DeepCache's full or
    shallow step of a branch), the latent's shape and the memory its capture took (graphs share
    one memory pool, so this is an upper bound of what each adds)."""
    found = []
    for (context, signature), captured in graphs.graphs.items():
        tag = context[1] if isinstance(context, tuple) and len(context) == 2 else None
        if not (isinstance(tag, tuple) and tag[:1] == ("compiled",)):
            continue
        latent = next((spec.shape for spec in signature.args if isinstance(spec, TensorSpec)), None)
        found.append(
            {
                "what": described(tag[1]),
                "latent": list(latent or ()),
                "mb": round(getattr(captured, "nbytes", 0) / 2**20, 1),
            }
        )
    return found


def status(graphs: GraphCache) -> dict:
    background = COMPILER.background
    return {
        "unavailable": compile_support(),
        "compiled_graphs": compiled_graphs(graphs),
        "compiling_in_background": bool(background is not None and background.thread.is_alive()),
        "interrupted_compiles": COMPILER.interruptions,
        "compiles": [{"what": described(entry.what), **entry.as_json()} for entry in COMPILER.compiles[-10:]],
        "compile_seconds_total": round(sum(entry.seconds for entry in COMPILER.compiles), 1),
        "failures": list(COMPILER.failures[-5:]),
        "cache_folder": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    }
