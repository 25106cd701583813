"""The VAE decoder compiled for a generation that runs the compiled UNet (`compile_unet`): the
decode after sampling is a third of the time outside sampling at 512² and most of it at 1024²,
and it is GPU-bound (a CUDA graph saves 8 % of it, compiling two thirds: docs/BENCHMARKS.md).

No CUDA graph here: the decoder runs once per image, and a graph would hold its working memory
(gigabytes at 1024²) for good. Compiled once per image size (the WebUI decodes one image at a
time), on the worker the Compiler waits for, announced in the progress text and interruptible
like the UNet's compile. It steps aside, with a note, where another extension replaced the
decoder's forward (a tiled VAE); live previews from another thread run the decoder's own forward.
"""

from __future__ import annotations

from modules import shared

from ..compiled_module import CompiledModuleForward, apply_compiled_module, remove_compiled_module
from ..errors import SpeedkitError
from ..undo import Undo
from . import compiled, fast_path


def vae_decoder():
    model = shared.sd_model
    first_stage = getattr(model, "first_stage_model", None)
    return getattr(first_stage, "decoder", None)


def compile_vae_decoder() -> tuple[Undo, CompiledModuleForward | None, str | None]:
    """(undo, the compiled forward or None, why it was not applied or None)."""
    decoder = vae_decoder()
    if decoder is None:
        return Undo.nothing("no VAE decoder"), None, "compiled VAE decoder not used: the model has no VAE decoder"
    if not fast_path.graphs_run_on_this_device():
        return Undo.nothing("not on the graphs' device"), None, None  # the graph's own note says why
    try:
        wrapper = apply_compiled_module(decoder, compiled.COMPILER, compiled.VAE_DECODER)
    except SpeedkitError as error:
        return Undo.nothing("decoder replaced"), None, f"compiled VAE decoder not used: {error}"
    return Undo(lambda: remove_compiled_module(wrapper), "compiled VAE decoder"), wrapper, None


def decoder_counts(wrapper: CompiledModuleForward | None) -> dict | None:
    """The record's `vae_decoder`: compiled and eager calls (by reason) of this generation."""
    if wrapper is None:
        return None
    return {"compiled": wrapper.compiled_calls, "eager_calls": dict(wrapper.eager_calls)}
