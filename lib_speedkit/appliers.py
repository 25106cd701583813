"""The appliers a host gives the engine (apply.py), built from a few host callables.

A host (the WebUI) describes itself as `HostHooks`: how it names and switches attention
backends, whether the cutoff, the graph, the lean step and DeepCache may run for this generation
or pass and what their host part is. `host_appliers(hooks)` turns
that into the engine's appliers. The WebUI builds its hooks from `modules.*`; the CPU tests build
them from stand-ins. Either way the same code applies the plan, so the exact-undo tests cover
the path the WebUI takes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import torch

from .apply import Applier, replaced_forwards_reason
from .compiled import Compiler, apply_compiled
from .cuda_graph import GraphCache, apply_cuda_graph, graph_support
from .deepcache import StepClock, apply_deepcache
from .errors import BackendUnavailable, FeatureSkipped, SpeedkitError
from .memory_format import apply_channels_last
from .plan import GuidanceCutoffConfig, SpeedPlan
from .tome import apply_tome
from .undo import Undo

WrappedForward = tuple[type, Callable, Callable]
"""(a class, the wrapper a host put on its forward, the original forward it keeps)."""


@dataclass(frozen=True)
class HostHooks:
    """What the engine needs from a host. Blockers return why a feature cannot run (None: it can)."""

    # attention: canonical backend name -> the host's title (BackendUnavailable when it has none),
    # the title in use, switching by title, and a check that the backend runs for this UNet
    backend_title: Callable[[str], str]
    current_title: Callable[[], str]
    switch_title: Callable[[str], None]
    check_backend: Callable[[str], None]
    # cutoff: whether it may apply to this generation, and the host's own part of it
    cutoff_blocker: Callable[[GuidanceCutoffConfig], str | None]
    host_cutoff: Callable[[GuidanceCutoffConfig], Undo]
    # CUDA graph: the cache, why this pass cannot be graphed, the key of what graphs cannot see,
    # and which forwards replaced on instances the key covers
    graphs: GraphCache
    graph_blocker: Callable[[], str | None]
    graph_key: Callable[[torch.nn.Module], Hashable]
    forward_keyed: Callable[[str, object], bool]
    # lean step: why this pass must keep the wrappers, and the wrappers to take off
    lean_blocker: Callable[[], str | None]
    wrapped_forwards: Callable[[], Iterable[WrappedForward]]
    # what a graphed pass needs changed around the UNet first (e.g. no CPU copy in it)
    graph_prepare: Callable[[], Undo] = lambda: Undo.nothing("nothing to prepare")
    # DeepCache: why this pass must run the UNet's own forward, and the step of each UNet call
    deepcache_blocker: Callable[[], str | None] = lambda: None
    deepcache_clock: StepClock | None = None
    # compiled UNet: why it cannot run here, and what compiles (None: nothing can)
    compile_blocker: Callable[[], str | None] = lambda: None
    compiler: Compiler | None = None


def attention_by_title(hooks: HostHooks) -> Applier:
    """Switch the host's attention backend by title; the undo switches back to the previous one."""

    def apply(_unet: torch.nn.Module, plan: SpeedPlan) -> Undo:
        name = plan.attention.backend
        title = hooks.backend_title(name)
        hooks.check_backend(name)
        previous = hooks.current_title()
        if previous == title:
            return Undo.nothing("attention unchanged")
        hooks.switch_title(title)
        if hooks.current_title() != title:
            hooks.switch_title(previous)
            raise BackendUnavailable(name, "the host failed to apply it (see its console)")
        return Undo(lambda: hooks.switch_title(previous), f"attention {name}")

    return apply


def cutoff(hooks: HostHooks) -> Applier:
    def apply(_unet: torch.nn.Module, plan: SpeedPlan) -> Undo:
        reason = hooks.cutoff_blocker(plan.cutoff)
        if reason is not None:
            raise FeatureSkipped(f"guidance cutoff skipped: {reason}")
        return hooks.host_cutoff(plan.cutoff)

    return apply


def cuda_graph(hooks: HostHooks) -> Applier:
    def apply(unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        reason = (
            hooks.graph_blocker()
            or graph_support(hooks.graphs.capturer.device_type)
            or replaced_forwards_reason(unet, hooks.forward_keyed)
        )
        if reason is not None:
            raise FeatureSkipped(f"CUDA graph not used for this pass: {reason}")
        prepared = hooks.graph_prepare()
        try:
            graphed = apply_cuda_graph(unet, hooks.graphs, hooks.graph_key(unet))
        except SpeedkitError as error:  # the UNet's own forward is replaced (ControlNet, ...)
            prepared()
            raise FeatureSkipped(f"CUDA graph not used for this pass: {error}") from None
        except BaseException:
            prepared()
            raise

        def remove() -> None:
            try:
                graphed()
            finally:
                prepared()

        return Undo(remove, "cuda graph")

    return apply


def bypass_wrapped_forwards(wrapped: Iterable[WrappedForward]) -> Undo:
    """Put the originals back on classes whose forward is still the host's wrapper; the undo puts
    the wrappers back. A class someone re-patched on top is left alone."""
    swapped = []
    for cls, wrapper, original in wrapped:
        if cls.forward is wrapper:
            cls.forward = original
            swapped.append((cls, wrapper, original))

    def restore() -> None:
        for cls, wrapper, original in swapped:
            if cls.forward is original:
                cls.forward = wrapper

    return Undo(restore, "lean step")


def lean_step(hooks: HostHooks) -> Applier:
    def apply(_unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        reason = hooks.lean_blocker()
        if reason is not None:
            raise FeatureSkipped(f"lean step off for this pass: {reason}")
        return bypass_wrapped_forwards(hooks.wrapped_forwards())

    return apply


def compile_unet(hooks: HostHooks) -> Applier:
    def apply(unet: torch.nn.Module, _plan: SpeedPlan) -> Undo:
        reason = "this host does not compile" if hooks.compiler is None else hooks.compile_blocker()
        if reason is not None:
            raise FeatureSkipped(f"compiled UNet not used for this pass: {reason}")
        return apply_compiled(unet, hooks.compiler)

    return apply


def deepcache(hooks: HostHooks) -> Applier:
    def apply(unet: torch.nn.Module, plan: SpeedPlan) -> Undo:
        if plan.deepcache.caches:
            reason = hooks.deepcache_blocker()
            if reason is not None:
                raise FeatureSkipped(f"DeepCache not used for this pass: {reason}")
        return apply_deepcache(unet, plan.deepcache, hooks.deepcache_clock)

    return apply


def host_appliers(hooks: HostHooks) -> dict[str, Applier]:
    """The engine's appliers for a host described by `hooks`."""
    return {
        "channels_last": lambda unet, plan: apply_channels_last(unet, True),
        "attention": attention_by_title(hooks),
        "tome": lambda unet, plan: apply_tome(unet, plan.tome),
        "cutoff": cutoff(hooks),
        "cuda_graph": cuda_graph(hooks),
        "compile": compile_unet(hooks),
        "lean_step": lean_step(hooks),
        "deepcache": deepcache(hooks),
    }
