"""The CUDA-graph fast path: replay a module's forward (the UNet's) from captured CUDA graphs.

Why: at 512² an eager SD1.5 UNet call issues about 1 350 operators; on a fast GPU the host needs
longer to launch them than the GPU needs to run them, so the WebUI is host-bound (on an H200 a
stock 512² step took 34–43 ms of host time for about 14 ms of GPU work; docs/BENCHMARKS.md).
A CUDA graph records the kernels of one call once and replays them with one launch.

How it works:
  * :func:`apply_cuda_graph` puts a :class:`GraphedForward` on the module instance (``forward``
    attribute); the undo removes it. Module hooks still run eagerly around every call.
  * Each call is keyed by a :class:`CallSignature` (every tensor argument's shape, dtype, device
    and strides, every other argument's value, the autocast state) plus the caller's *context
    key*: whatever the graph cannot see (weights' addresses, forward functions, attention
    backend, ToMe settings — :func:`module_fingerprint` covers the module tree).
  * The first call of a key warms up on a side stream and captures; later calls copy the inputs
    into the captured (static) buffers, replay, and return a clone of the output.
  * Calls a graph cannot serve run eagerly and are counted by reason: gradients on, a tensor not
    on a CUDA device, an argument that is neither a tensor nor a hashable value, a key whose
    capture failed (the failure and its reason are remembered), a call during another capture.

Cost: lossless — a replay runs the very kernels eager mode ran at capture time, so outputs are
bit-identical to eager with the same backend (measured on the GPU by benchmarks/unet_step.py).
Memory: the graphs of one cache share one memory pool, so they hold about the working memory of
the largest captured call (at 512² batch 2 fp16 SD1.5 a few hundred MB), plus static input and
output buffers per graph; `max_graphs` bounds the count; `release()` frees all. After a capture
fails, later captures go to a new pool (the failed one cannot be shared), so the graphs kept from
before hold one more call's working memory until released. Time: a capture costs a few eager
calls once per key.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from . import module_walk
from .errors import SpeedkitError
from .undo import Undo

DEFAULT_MAX_GRAPHS = 8
WARMUP_CALLS = 2
MIN_TORCH = (2, 4)
"""Oldest torch the fast path runs on: it reads the autocast state by device type
(`torch.is_autocast_enabled("cuda")`, `torch.get_autocast_dtype`), which came with 2.4. Tested on
2.11 (GPU) and 2.13-2.14 (CPU stand-in). A1111 1.10.1's own installer brings 2.1.2: the switch is
unavailable there, with this reason."""
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def graph_support(device_type: str = "cuda") -> str | None:
    """Why CUDA graphs cannot run here (None: they can): a torch older than MIN_TORCH, or no
    CUDA device for a CUDA capturer."""
    if torch_version() < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        return f"the CUDA-graph fast path needs torch >= {need} (this WebUI runs torch {torch.__version__})"
    if device_type == "cuda" and not torch.cuda.is_available():
        return "CUDA graphs need a CUDA device (none is available)"
    return None


# --------------------------------------------------------------------------- keys


class NotGraphable(Exception):
    """This call cannot be served by a graph; the message is the reason (it runs eagerly)."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSpec:
        return cls(tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)

    def empty(self) -> torch.Tensor:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)


@dataclass(frozen=True)
class CallSignature:
    """Everything about one call that decides whether a captured graph can replay it."""

    args: tuple[Hashable, ...]
    kwargs: tuple[tuple[str, Hashable], ...]
    autocast: tuple[bool, torch.dtype | None]


def _spec(value: object, where: str, device_type: str) -> Hashable:
    if isinstance(value, torch.Tensor):
        if value.device.type != device_type:
            raise NotGraphable(f"{where} is on {value.device.type}, not on a {device_type.upper()} device")
        return TensorSpec.of(value)
    try:
        hash(value)
    except TypeError:
        raise NotGraphable(f"{where} is a {type(value).__name__}, not a tensor or a plain value") from None
    return ("value", value)


def autocast_state() -> tuple[bool, torch.dtype | None]:
    """(enabled, dtype) of CUDA autocast now."""
    if not torch.is_autocast_enabled("cuda"):
        return (False, None)
    return (True, torch.get_autocast_dtype("cuda"))


def call_signature(args: tuple, kwargs: dict, device_type: str = "cuda") -> CallSignature:
    """The signature of a call, or NotGraphable naming the argument that prevents a graph."""
    if torch.is_grad_enabled():
        raise NotGraphable("gradients are enabled")
    arg_specs = tuple(_spec(value, f"argument {index}", device_type) for index, value in enumerate(args))
    kwarg_specs = tuple((name, _spec(kwargs[name], f"argument {name!r}", device_type)) for name in sorted(kwargs))
    if not any(isinstance(spec, TensorSpec) for spec in (*arg_specs, *(s for _, s in kwarg_specs))):
        raise NotGraphable("no tensor arguments")
    return CallSignature(arg_specs, kwarg_specs, autocast_state())


class Fingerprint:
    """A hashable digest of a module's state, holding every object it names by identity (instance
    forwards, closure contents) alive: while a graph keyed by it is cached, no such object can be
    freed and its address reused by another one that would then look "the same"."""

    __slots__ = ("digest", "refs")

    def __init__(self, digest: int, refs: list[object]):
        self.digest = digest
        self.refs = refs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fingerprint) and other.digest == self.digest

    def __hash__(self) -> int:
        return self.digest

    def __repr__(self) -> str:
        return f"<Fingerprint {self.digest & 0xFFFFFFFF:08x}>"


def module_fingerprint(module: torch.nn.Module) -> Fingerprint:
    """What a graph of `module` silently depends on: every parameter's and buffer's storage
    (address, shape, strides, dtype) and every submodule's class, forward function and hooks.

    The root's own hooks are left out: they run eagerly around every call, graph or not.
    Computed once per sampling pass (about 4 ms for an SD1.5 UNet on one server CPU core,
    benchmarks/graph_fallback_overhead.py), not per call. Weights changed in place (same storage)
    need no new graph: a replay reads the current values. Python state read inside a forward (a
    flag an extension flips) is NOT seen: hosts must key on it or keep such modules out of graphs
    (see `instance_forwards`).
    """
    refs: list[object] = []
    class_keys: dict[type, int] = {}
    entries = [
        (
            name,
            _own_tensors(sub._parameters),
            _own_tensors(sub._buffers),
            class_keys.get(type(sub)) or _class_key(type(sub), class_keys, refs),
            _instance_forward_identity(sub, refs) if "forward" in sub.__dict__ else None,
            tuple(sub._forward_pre_hooks) if sub._forward_pre_hooks and sub is not module else (),
            tuple(sub._forward_hooks) if sub._forward_hooks and sub is not module else (),
        )
        for name, sub in module_walk.named_modules(module)  # every module's own tensors, class, hooks
    ]
    return Fingerprint(hash(tuple(entries)), refs)


def _own_tensors(table: dict) -> tuple:
    """A module's own parameters or buffers by storage: name, address, shape, strides, dtype."""
    if not table:
        return ()
    return tuple(  # a list comprehension: half the time of a generator here
        [
            (key, tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.dtype)
            for key, tensor in table.items()
            if tensor is not None
        ]
    )


PLAIN_VALUES = (int, float, str, bytes, bool, type(None), torch.dtype, torch.device)


def _by_identity(value: object, refs: list[object]) -> Hashable:
    """Plain immutable values by value; anything else by identity, kept alive in `refs`."""
    if isinstance(value, PLAIN_VALUES):
        return ("value", value)
    refs.append(value)
    return ("id", id(value))


def _function_key(function: object, refs: list[object]) -> Hashable:
    """A function by its code and the objects its closure holds: two closures made by the same
    factory with other values differ; the same method re-created (tomesd builds its block classes
    anew on every apply) does not."""
    function = getattr(function, "__func__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return _by_identity(function, refs)
    cells = tuple(_by_identity(cell.cell_contents, refs) for cell in function.__closure__ or () if _cell_filled(cell))
    return (code, cells)


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


CONSTRUCTION_METHODS = frozenset({"__init__", "__setstate__"})
"""Left out of class keys: a forward a graph replays never runs them. torch._dynamo replaces
`nn.Module.__init__` and `__setstate__` on its first compile (to tag modules made inside a
forward); with them in the key, every graph's key changed once after the first compiled
generation, which compiled and captured again (seen on the H200)."""


def _class_key(cls: type, memo: dict[type, int], refs: list[object]) -> int:
    """A class by name and by the code of everything it defines itself (its construction methods
    aside), bases included; hashed once per class and fingerprint (hashing the code objects again
    for each of an SD1.5 UNet's 800 modules took most of the fingerprint's time)."""
    if cls not in memo:
        own = tuple(
            (name, _function_key(value, refs))
            for name, value in sorted(vars(cls).items())
            if callable(value) and name not in CONSTRUCTION_METHODS
        )
        bases = tuple(_class_key(base, memo, refs) for base in cls.__bases__ if base is not object)
        memo[cls] = hash((cls.__module__, cls.__qualname__, own, bases))
    return memo[cls]


def _instance_forward_identity(module: torch.nn.Module, refs: list[object]) -> Hashable:
    forward = module.__dict__.get("forward")
    if forward is None:
        return None
    if isinstance(getattr(forward, "speedkit_wrapper", None), str):
        return "speedkit"  # Speedkit's own (the graph, DeepCache on it): never another extension's state
    if is_class_forward(module, forward):
        return None
    return _by_identity(forward, refs)


def refuse_foreign_forward(module: torch.nn.Module, existing: object) -> None:
    """SpeedkitError when `existing` (the module's instance forward, None if it has none) is
    another extension's: a wrapper of Speedkit's put over it would hide it or be undone by it."""
    if existing is not None and not is_class_forward(module, existing):
        raise SpeedkitError(f"the {type(module).__name__}'s forward is already replaced by another extension")


def is_class_forward(module: torch.nn.Module, forward: object) -> bool:
    """True for an instance attribute that is just the class's own forward bound to the module
    (what ControlNet leaves behind when it restores `model.forward = model._original_forward`)."""
    return getattr(forward, "__self__", None) is module and getattr(forward, "__func__", None) is type(module).forward


def instance_forwards(module: torch.nn.Module) -> dict[str, object]:
    """Submodules (by name) whose forward something replaced on the instance: their Python state
    (a flag, a random choice) is invisible to a graph's key. Speedkit's own forwards and a plain
    re-bound class forward do not count."""
    found = {}
    for name, sub in module_walk.named_modules(module):
        forward = sub.__dict__.get("forward")
        if forward is not None and not _known_forward(sub, forward):
            found[name] = forward
    return found


def _known_forward(module: torch.nn.Module, forward: object) -> bool:
    """Speedkit's own wrappers (the graph, DeepCache), a re-bound class forward, or a Speedkit
    attention backend's forward (a pure function of the backend, which graph keys name)."""
    wrapper = isinstance(getattr(forward, "speedkit_wrapper", None), str)
    own = wrapper or getattr(forward, "speedkit_backend", None) is not None
    return own or is_class_forward(module, forward)


# --------------------------------------------------------------------------- capturing


class CapturedCall(Protocol):
    """A captured call: static inputs to copy into, replay(), the static output."""

    static_args: tuple
    static_kwargs: dict
    output: Any

    def replay(self) -> None: ...


class Capturer(Protocol):
    device_type: str  # the device whose tensors it can capture

    def capture(self, forward: Callable, args: tuple, kwargs: dict) -> CapturedCall: ...

    def capturing(self) -> bool: ...  # True while some graph capture runs on this thread's stream

    def release(self) -> None: ...


@dataclass
class _CudaCapturedCall:
    graph: Any
    static_args: tuple
    static_kwargs: dict
    output: Any
    nbytes: int = 0  # device memory this capture took (its pool growth and its static buffers)

    def replay(self) -> None:
        self.graph.replay()


def _autocast_without_cache():
    """The current autocast state with its weight-cast cache off (required while capturing)."""
    enabled, dtype = autocast_state()
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype, cache_enabled=False)


class CudaCapturer:
    """Captures with torch.cuda.CUDAGraph; the graphs share one memory pool (a new one after a
    failed capture or a release)."""

    device_type = "cuda"

    def __init__(self, warmup_calls: int = WARMUP_CALLS):
        self.warmup_calls = warmup_calls
        self.pool = None

    def capture(self, forward: Callable, args: tuple, kwargs: dict) -> CapturedCall:
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        reserved_before = torch.cuda.memory_reserved()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), _autocast_without_cache():
            for _ in range(self.warmup_calls):
                forward(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the WebUI's memory monitor thread queries the device during captures.
            with _autocast_without_cache(), torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                output = forward(*args, **kwargs)
        except BaseException:
            # The failed graph gives its pool back when it is collected; if no other graph holds the
            # pool, the allocator then refuses the handle for the next capture (PyTorch asserts
            # "use_count > 0"). The next capture starts a new pool; the graphs kept hold the old one.
            self.pool = None
            raise
        grown = max(0, torch.cuda.memory_reserved() - reserved_before)
        return _CudaCapturedCall(graph, args, kwargs, output, grown + static_bytes(args, kwargs))

    def capturing(self) -> bool:
        return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()

    def release(self) -> None:
        self.pool = None


# --------------------------------------------------------------------------- the cache


def static_bytes(args: tuple, kwargs: dict) -> int:
    """Bytes of a capture's static input buffers."""
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _copy_into(static: object, value: object) -> None:
    if isinstance(static, torch.Tensor):
        static.copy_(value)


def _static_copy(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return TensorSpec.of(value).empty().copy_(value)
    return value


def _clone_output(output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_clone_output(item) for item in output)
    raise NotGraphable(f"the forward returned a {type(output).__name__}, not a tensor")


@dataclass
class GraphStats:
    """What the cache did (shown by the status endpoint and the bench)."""

    replays: int = 0
    captures: int = 0
    eager_calls: Counter = field(default_factory=Counter)  # reason -> calls
    capture_failures: dict[str, str] = field(default_factory=dict)  # key text -> reason
    capture_seconds: float = 0.0
    evictions: int = 0  # graphs dropped to stay within the memory budget or the count limit
    failed_captures: int = 0

    def as_json(self) -> dict:
        return {
            "replays": self.replays,
            "captures": self.captures,
            "eager_calls": dict(self.eager_calls),
            "capture_failures": dict(self.capture_failures),
            "capture_seconds": round(self.capture_seconds, 3),
            "evictions": self.evictions,
            "failed_captures": self.failed_captures,
        }

    def since(self, before: dict) -> dict:
        """What happened since `before` (an earlier `as_json()`): replays, captures, eager calls
        by reason and capture time of that stretch (one sampling pass, one generation)."""
        eager = {
            reason: count - before["eager_calls"].get(reason, 0)
            for reason, count in self.eager_calls.items()
            if count - before["eager_calls"].get(reason, 0)
        }
        return {
            "replays": self.replays - before["replays"],
            "captures": self.captures - before["captures"],
            "eager_calls": eager,
            "capture_seconds": round(self.capture_seconds - before["capture_seconds"], 3),
        }


class GraphCache:
    """Captured graphs by (context key, call signature); the least recently used are evicted
    beyond `max_graphs` or `max_bytes` of device memory (the newest graph always stays). Failed
    captures are remembered so they are not retried; an out-of-memory while capturing releases
    every graph and tries once more."""

    def __init__(
        self, capturer: Capturer | None = None, max_graphs: int = DEFAULT_MAX_GRAPHS, max_bytes: int | None = None
    ):
        if max_graphs < 1:
            raise SpeedkitError(f"max_graphs must be at least 1, got {max_graphs}")
        self.capturer = capturer if capturer is not None else CudaCapturer()
        self.max_graphs = max_graphs
        self.max_bytes = max_bytes
        self.graphs: OrderedDict[Hashable, CapturedCall] = OrderedDict()
        self.failed: dict[Hashable, str] = {}
        self.last_failure: str | None = None  # the reason of the newest failed capture
        self.stats = GraphStats()

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def nbytes(self) -> int:
        """Device memory the cached graphs took when captured (an estimate: they share a pool)."""
        return sum(getattr(captured, "nbytes", 0) for captured in self.graphs.values())

    def call(self, forward: Callable, context_key: Hashable, args: tuple, kwargs: dict) -> object:
        """Serve one call: replay, capture then replay, or run eagerly (counted by reason)."""
        if self.capturer.capturing():
            return self._eager(forward, args, kwargs, "called while another graph is being captured")
        try:
            key = (context_key, call_signature(args, kwargs, self.capturer.device_type))
        except NotGraphable as reason:
            return self._eager(forward, args, kwargs, str(reason))
        if key in self.failed:
            return self._eager(forward, args, kwargs, f"capture failed earlier: {self.failed[key]}")
        captured = self.graphs.get(key)
        if captured is None:
            captured = self._capture(forward, key, args, kwargs)
            if captured is None:
                return self._eager(forward, args, kwargs, f"capture failed: {self.failed[key]}")
        else:
            self.graphs.move_to_end(key)
        return self._replay(captured, args, kwargs)

    def _eager(self, forward: Callable, args: tuple, kwargs: dict, reason: str) -> object:
        self.stats.eager_calls[reason] += 1
        return forward(*args, **kwargs)

    def _replay(self, captured: CapturedCall, args: tuple, kwargs: dict) -> object:
        for static, value in zip(captured.static_args, args, strict=True):
            _copy_into(static, value)
        for name, value in kwargs.items():
            _copy_into(captured.static_kwargs[name], value)
        captured.replay()
        self.stats.replays += 1
        return _clone_output(captured.output)

    def _capture(self, forward: Callable, key: Hashable, args: tuple, kwargs: dict) -> CapturedCall | None:
        started = time.perf_counter()
        try:
            captured = self._capture_once(forward, args, kwargs)
        except OUT_OF_MEMORY:
            self.release()  # every graph's memory back, then one more try
            try:
                captured = self._capture_once(forward, args, kwargs)
            except (RuntimeError, NotGraphable) as error:
                return self._failed(key, error)
        except (RuntimeError, NotGraphable) as error:
            return self._failed(key, error)
        finally:
            self.stats.capture_seconds += time.perf_counter() - started
        self.stats.captures += 1
        self.graphs[key] = captured
        self._evict()
        return captured

    def _capture_once(self, forward: Callable, args: tuple, kwargs: dict) -> CapturedCall:
        static_args = tuple(_static_copy(value) for value in args)
        static_kwargs = {name: _static_copy(value) for name, value in kwargs.items()}
        captured = self.capturer.capture(forward, static_args, static_kwargs)
        _clone_output(captured.output)  # refuse outputs a replay could not hand back
        return captured

    def _failed(self, key: Hashable, error: BaseException) -> None:
        out_of_memory = isinstance(error, OUT_OF_MEMORY)
        reason = "out of memory while capturing" if out_of_memory else _short_reason(error)
        self.failed[key] = self.last_failure = reason
        self.stats.capture_failures[_key_text(key)] = reason
        self.stats.failed_captures += 1
        if out_of_memory:
            self.release()  # give the memory back to eager mode
        return None

    def _evict(self) -> None:
        """Least recently used first, while over the count or the memory budget; the newest stays."""
        while len(self.graphs) > 1 and (
            len(self.graphs) > self.max_graphs or (self.max_bytes is not None and self.nbytes > self.max_bytes)
        ):
            self.graphs.popitem(last=False)
            self.stats.evictions += 1

    def release(self) -> None:
        """Drop every graph and its memory (model unload, switch off, out of memory)."""
        self.graphs.clear()
        self.capturer.release()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def forget_failures(self) -> None:
        self.failed.clear()


def _short_reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _key_text(key: Hashable) -> str:
    _context, signature = key
    shapes = [spec.shape for spec in signature.args if isinstance(spec, TensorSpec)]
    return f"shapes {shapes}, autocast {signature.autocast}"


# --------------------------------------------------------------------------- the module wrapper


class GraphedForward:
    """The instance-level forward apply_cuda_graph installs: routes every call through the cache.

    Once a capture fails it steps aside for the rest of its life (a host applies it per sampling
    pass): later calls go straight to the eager forward, with no key work, counted by reason."""

    def __init__(self, module: torch.nn.Module, cache: GraphCache, context_key: Callable[[], Hashable]):
        self.module = module
        self.eager_forward = type(module).forward.__get__(module)
        self.cache = cache
        self.context_key = context_key
        # compiled.Compiler (its compiled forwards, and whether one is ready for a call's shapes):
        # set by compiled.apply_compiled
        self.compiler = None
        self.gave_up: str | None = None

    speedkit_wrapper = "speedkit-graph"

    def __call__(self, *args, **kwargs):
        return self.route(self.eager_forward, None, args, kwargs)

    def route(self, forward: Callable, tag: Hashable, args: tuple, kwargs: dict):
        """Serve a call of `forward` (the module's own, or a part of it such as DeepCache's
        shallow step: `tag` names it, None for the module's forward) through the cache."""
        if self.gave_up is not None:
            return self.cache._eager(forward, args, kwargs, self.gave_up)
        context = self.context_key()
        if self.compiler is not None:  # the compiled kernels are what the graph captures
            compiled = self.compiler(self.module, tag or "forward", forward)
            uncompiled = self.compiler.ready(compiled, args, kwargs, context)
            if uncompiled is not None:
                return self.cache._eager(forward, args, kwargs, uncompiled)
            forward, tag = compiled, ("compiled", tag)
        failures = self.cache.stats.failed_captures
        key = context if tag is None else (context, tag)
        output = self.cache.call(forward, key, args, kwargs)
        if self.cache.stats.failed_captures > failures:
            # not capture_failures' last value: it is keyed by shapes, and a key text seen before
            # keeps its old place in the dict
            self.gave_up = f"capture failed earlier in this pass: {self.cache.last_failure}"
        return output


def apply_cuda_graph(
    module: torch.nn.Module, cache: GraphCache, context_key: Hashable | Callable[[], Hashable] = None
) -> Undo:
    """Route `module`'s forward through `cache` until the undo runs.

    `context_key`: a value (or a function returning it per call) naming the state the graph
    cannot see; graphs captured under another key are never replayed (compiled.apply_compiled
    then has the wrapper capture compiled forwards, keyed apart). Refuses (SpeedkitError) when
    something else already replaced the module's forward on the instance (e.g. ControlNet): its
    forward would not be what the graph captures.
    """
    existing = module.__dict__.get("forward")
    if isinstance(existing, GraphedForward):
        del module.__dict__["forward"]  # applying twice: the newer one replaces it
        existing = None
    else:
        refuse_foreign_forward(module, existing)
    key_function = context_key if callable(context_key) else (lambda: context_key)
    graphed = GraphedForward(module, cache, key_function)
    module.forward = graphed

    def remove() -> None:
        if module.__dict__.get("forward") is graphed:
            if existing is None:
                del module.__dict__["forward"]
            else:
                module.forward = existing

    return Undo(remove, "cuda graph")


def graphed_forward_of(module: torch.nn.Module) -> GraphedForward | None:
    forward = module.__dict__.get("forward")
    return forward if isinstance(forward, GraphedForward) else None
