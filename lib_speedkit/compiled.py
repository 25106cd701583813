"""The compiled UNet: torch.compile (inductor) of the UNet's forward, or of DeepCache's steps,
whose kernels the CUDA graphs then capture and replay (settings and cost: plan.CompileConfig).

`Compiler` makes one compiled version per module and per forward (the UNet's own, DeepCache's full
or shallow step of a branch) and keeps it while the module lives, so a new sampling pass does not
compile again; torch.compile itself compiles once per input shape (`dynamic=False`) and keeps the
weights as inputs (not frozen constants), so weights changed in place (a LoRA merged) are seen.
A forward whose compiling fails runs uncompiled from then on and says why (`failures`).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from .cuda_graph import autocast_state, graph_support, graphed_forward_of
from .errors import FeatureSkipped
from .memory_format import is_channels_last
from .undo import Undo

RECOMPILE_LIMIT = 64
"""torch._dynamo's compiled-graph cache per code object: SDXL's UNet needs more than the default 8
(one compiled frame per block shape), and every size or batch adds its own."""


def compile_support() -> str | None:
    """Why the compiled UNet cannot run in this Python (None: it can): torch older than the graph
    needs, no triton (inductor's GPU code generator), or a GPU older than triton supports."""
    reason = graph_support("cpu")
    if reason is not None:
        return reason
    try:
        import triton  # noqa: F401 - availability only
    except ImportError:
        return "the compiled UNet needs triton (Linux torch wheels bring it; on Windows: pip install triton-windows)"
    if torch.cuda.is_available() and torch.cuda.get_device_capability() < (7, 0):
        name = torch.cuda.get_device_name()
        return f"triton needs a GPU of compute capability 7.0 or newer ({name} is older)"
    return None


def inductor(forward: Callable) -> Callable:
    """torch.compile with inductor, one static-shape graph per input shape, through an entry of
    its own (`own_entry`)."""
    import torch._dynamo

    config, name = torch._dynamo.config, recompile_limit_name()
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    return torch.compile(own_entry(forward), dynamic=False)


def recompile_limit_name() -> str:
    """torch._dynamo's setting of compiled graphs per code object: `recompile_limit` in newer
    torch (`cache_size_limit` stays only as an alias), `cache_size_limit` before."""
    import torch._dynamo

    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


_entries = itertools.count()


def own_entry(forward: Callable) -> Callable:
    """`forward` called through a code object of its own. torch._dynamo keeps compiled code per
    code object and does not guard the strides of a module's weights: a forward compiled again
    for another weight layout (channels-last switched on or off) must not find the entries
    compiled for the old one (their kernels assert the old strides)."""

    def entry(*args, **kwargs):
        return forward(*args, **kwargs)

    entry.__code__ = entry.__code__.replace(co_name=f"speedkit_compiled_{next(_entries)}")
    return entry


def weight_layout(module: torch.nn.Module) -> Hashable:
    """What compiled kernels of `module` assume about its weights beyond their shapes: the
    dtype and whether the 4-D weights are channels-last."""
    first = next(module.parameters(), None)
    return (None if first is None else first.dtype, is_channels_last(module))


def _is_compile_error(error: BaseException) -> bool:
    """torch.compile's own failures (tracing, the backend, triton), not the UNet's (out of memory)."""
    import torch._dynamo.exc

    return isinstance(error, torch._dynamo.exc.TorchDynamoException)


class CompiledForward:
    """A compiled forward that runs the original for good once compiling failed. `ready` holds the
    call signatures it has compiled for (torch.compile compiles on the first call of each)."""

    def __init__(
        self, original: Callable, compiled: Callable, on_failure: Callable[[str], None], name: Hashable = None
    ):
        self.name = name  # what it compiles ("forward", a DeepCache step, "vae decoder")
        self.original = original
        self.compiled = compiled
        self.on_failure = on_failure
        self.failure: str | None = None
        self.ready: set[Hashable] = set()

    def __call__(self, *args, **kwargs):
        if self.failure is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:
                if not _is_compile_error(error):
                    raise
                self.failure = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
                self.on_failure(self.failure)
        return self.original(*args, **kwargs)


def shape_key(args: tuple, kwargs: dict) -> Hashable:
    """What a static-shape compile depends on in a call: its tensors' shapes, dtypes and devices
    (and the other values as they are), with the autocast state the call runs under."""

    def spec(value: object) -> Hashable:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, value.device.type)
        return value if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__

    return (tuple(spec(a) for a in args), tuple((k, spec(v)) for k, v in sorted(kwargs.items())), autocast_state())


class _Compiling:
    """One first call of a compiled forward, run on a worker thread under the caller's gradient and
    autocast state, so that the caller can stop waiting for it (the WebUI's Interrupt)."""

    def __init__(self, forward: CompiledForward, key: Hashable, args: tuple, kwargs: dict):
        self.forward, self.key = forward, key
        self.error: BaseException | None = None
        args, kwargs = _detached(args), {name: _detached(value) for name, value in kwargs.items()}
        grad, (autocast, dtype) = torch.is_grad_enabled(), autocast_state()
        device = torch.cuda.current_device() if torch.cuda.is_available() else None

        def first_call() -> None:
            try:
                if device is not None:
                    torch.cuda.set_device(device)
                # the weight-cast cache off, as in the graph's capture: torch._dynamo guards on
                # it, and a compile under the other state would be compiled again there
                cast = (
                    torch.autocast("cuda", dtype=dtype, cache_enabled=False) if autocast else contextlib.nullcontext()
                )
                with torch.set_grad_enabled(grad), cast:
                    forward(*args, **kwargs)
                forward.ready.add(key)
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits for it
                self.error = error

        self.thread = threading.Thread(target=first_call, name="speedkit-compile", daemon=True)
        self.thread.start()

    def wait(self, interrupted: Callable[[], bool], poll_seconds: float = 0.1) -> bool:
        """True once the first call finished (its error re-raised); False if `interrupted` said stop first."""
        while self.thread.is_alive():
            if interrupted():
                return False
            self.thread.join(poll_seconds)
        if self.error is not None:
            raise self.error
        return True


def _detached(value: object) -> object:
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


@dataclass(frozen=True)
class CompileTime:
    """One compile the caller waited for: what was compiled (the compiled forward's name), the
    first argument's (shape, dtype, device) and seconds (torch.compile's tracing and code
    generation, and the first run of its kernels)."""

    what: Hashable
    first_argument: Hashable
    seconds: float

    def as_json(self) -> dict:
        shape = self.first_argument[0] if isinstance(self.first_argument, tuple) and self.first_argument else None
        return {"shape": list(shape) if isinstance(shape, tuple) else None, "seconds": round(self.seconds, 1)}


class Compiler:
    """Compiled forwards per module and per `what` (a hashable name of the forward).

    The first call of each shape compiles (about a minute for a UNet) on a worker thread while
    the caller waits: `interrupted` (the host's Interrupt button) makes it stop waiting, and that
    call and every call needing a compile until the worker is done run uncompiled (`ready` says
    which). `announce(what, args)` tells the host a compile starts (its progress text)."""

    def __init__(self, compile_fn: Callable[[Callable], Callable] = inductor):
        self.compile_fn = compile_fn
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._layouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.failures: list[str] = []  # why compiling failed, newest last
        self.interrupted: Callable[[], bool] = lambda: False
        self.announce: Callable[[Hashable, tuple], None] = lambda what, args: None
        self.background: _Compiling | None = None  # a compile the caller stopped waiting for
        self.interruptions = 0
        self.compiles: list[CompileTime] = []  # each compile waited for, oldest first

    def __call__(self, module: torch.nn.Module, what: Hashable, forward: Callable) -> CompiledForward:
        """The compiled version of `forward` (named `what`) for `module`'s weight layout as
        `use_layout` last saw it."""
        per_module = self._compiled.setdefault(module, {})
        key = (what, self._layouts.get(module))
        if key not in per_module:  # torch.compile is lazy: the first call of each shape compiles
            per_module[key] = CompiledForward(forward, self.compile_fn(forward), self.failures.append, what)
        return per_module[key]

    def use_layout(self, module: torch.nn.Module) -> None:
        """Look at `module`'s weight layout (once per sampling pass: channels-last may have changed)."""
        self._layouts[module] = weight_layout(module)

    def ready(self, forward: CompiledForward, args: tuple, kwargs: dict, context: Hashable = None) -> str | None:
        """Compile `forward` for this call's shapes and `context` (the graph's key: what else the
        compiled code depends on, such as ToMe's patched blocks, which torch._dynamo would
        otherwise compile again inside the graph's capture) if needed. None: it may run
        (compiled, or its original after a compile failure); else why this call runs uncompiled."""
        if forward.failure is not None:
            return None
        key = (context, shape_key(args, kwargs))
        if key in forward.ready:
            return None
        if self.background is not None:
            if self.background.thread.is_alive():
                return "the compiled UNet is still compiling a shape in the background (interrupted earlier)"
            self.background = None
        self.announce(forward.name, args)
        started = time.perf_counter()
        compiling = _Compiling(forward, key, args, kwargs)
        if compiling.wait(self.interrupted):
            first_argument = key[1][0][0] if key[1][0] else ()
            self.compiles.append(CompileTime(forward.name, first_argument, time.perf_counter() - started))
            return None
        self.background = compiling
        self.interruptions += 1
        return "compiling was interrupted: this call ran uncompiled (the compile finishes in the background)"

    def forget(self) -> None:
        """Drop every compiled forward (model load and unload: a compiled forward holds its module)."""
        self._compiled = weakref.WeakKeyDictionary()
        self._layouts = weakref.WeakKeyDictionary()


def apply_compiled(unet: torch.nn.Module, compiler: Compiler) -> Undo:
    """Have the graph wrapper on `unet` (applied first) capture compiled forwards until the undo.
    FeatureSkipped when the UNet is not graphed for this pass (the graph's note says why)."""
    graphed = graphed_forward_of(unet)
    if graphed is None:
        raise FeatureSkipped("compiled UNet not used for this pass: the CUDA graph is not used (see its note)")
    compiler.use_layout(unet)
    graphed.compiler = compiler

    def remove() -> None:
        if graphed.compiler is compiler:
            graphed.compiler = None

    return Undo(remove, "compiled UNet")
