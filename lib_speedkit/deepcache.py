"""DeepCache on an ldm (SD1/SD2) or sgm (SDXL) UNet: shallow steps reuse the deep features of the
last full step (settings and cost: plan.DeepCacheConfig).

The UNet's forward runs its input blocks, keeping each output as a skip connection, the middle
block, then its output blocks, each taking the previous output concatenated with one skip
connection. With branch b (0 = the shallowest skip connection) and n blocks per side:

  * a full step runs the whole forward and keeps `deep`: what enters output block n-1-b before
    the concatenation (the output of every block deeper than skip connection b);
  * a shallow step runs input blocks 0..b, takes `deep` from the last full step, and runs output
    blocks n-1-b..n-1 and the final layers: the deep blocks do not run at all.

Both are computed by the UNet's own blocks and by the functions its forward uses (`th.cat` and
`timestep_embedding` looked up in the UNet's module when called, so the WebUI's patches of them,
its `cat` that resizes odd sizes, still apply). A full step gives exactly the UNet's own output.

`DeepCacheForward` is what `apply_deepcache` puts on the UNet instance. It learns the step of each
call from a clock (the WebUI: its CFG denoiser's step; the library: one step per call), keeps one
deep tensor per call slot (the n-th call of a step, its shapes: the cond/uncond halves a host
runs as separate calls, or a batch the guidance cutoff halved, never share a cache) and runs a
full step when the slot has none. When the UNet's forward is replayed from CUDA graphs, it routes
the full and the shallow step through the same cache as two graphs per shape.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .cuda_graph import GraphedForward, graphed_forward_of, is_class_forward
from .errors import FeatureSkipped, code_name
from .plan import DeepCacheConfig
from .undo import SLOTS, Undo

StepClock = Callable[[], tuple[int, int | None]]
"""() -> (the current step from 0, the pass's total steps or None when unknown)."""
UNET_PARTS = ("input_blocks", "middle_block", "output_blocks", "out", "time_embed")


def layout_reason(unet: torch.nn.Module, branch: int) -> str | None:
    """Why DeepCache cannot run on `unet` with `branch` (None: it can)."""
    missing = [name for name in UNET_PARTS if not hasattr(unet, name)]
    if missing or not hasattr(unet, "model_channels"):
        return f"the {type(unet).__name__} is not an ldm/sgm UNet (it has no {', '.join(missing) or 'model_channels'})"
    if getattr(unet, "predict_codebook_ids", False):
        return "the UNet predicts codebook ids"
    blocks = len(unet.input_blocks)
    if len(unet.output_blocks) != blocks:
        return f"the UNet has {blocks} input blocks but {len(unet.output_blocks)} output blocks"
    if branch >= blocks:
        return f"deepcache.branch {branch} is deeper than this UNet's {blocks} skip connections (0-{blocks - 1})"
    return None


def _host_module(unet: torch.nn.Module):
    """The module the UNet's class was defined in: its forward's `th` and `timestep_embedding`."""
    return sys.modules[type(unet).__module__]


def _embedding(unet: torch.nn.Module, module, timesteps: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    emb = unet.time_embed(module.timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
    if getattr(unet, "num_classes", None) is not None:
        emb = emb + unet.label_emb(y)
    return emb


def _input(unet: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ldm casts the input to the UNet's dtype; sgm leaves it (its forward has the cast commented out)."""
    if type(unet).__module__.startswith("sgm.") or not isinstance(getattr(unet, "dtype", None), torch.dtype):
        return x
    return x.type(unet.dtype)


def _down(unet: torch.nn.Module, module, blocks, x, timesteps, context, y) -> tuple:
    """The embedding, then `blocks` (input blocks from the first): (emb, h, the skip connections)."""
    emb = _embedding(unet, module, timesteps, y)
    h, skips = _input(unet, x), []
    for block in blocks:
        h = block(h, emb, context)
        skips.append(h)
    return emb, h, skips


def _final(unet: torch.nn.Module, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return unet.out(h.type(x.dtype))


@dataclass(frozen=True)
class FullStep:
    """The whole UNet forward; returns (output, the deep features of `branch`)."""

    unet: torch.nn.Module
    branch: int

    def __call__(self, x, timesteps=None, context=None, y=None):
        unet, module = self.unet, _host_module(self.unet)
        emb, h, skips = _down(unet, module, unet.input_blocks, x, timesteps, context, y)
        h = unet.middle_block(h, emb, context)
        deep_at = len(unet.output_blocks) - 1 - self.branch
        deep = h
        for index, block in enumerate(unet.output_blocks):
            if index == deep_at:
                deep = h
            h = block(module.th.cat([h, skips.pop()], dim=1), emb, context)
        return _final(unet, h, x), deep


@dataclass(frozen=True)
class ShallowStep:
    """Input blocks 0..branch, the cached `deep` features, output blocks n-1-branch..n-1."""

    unet: torch.nn.Module
    branch: int

    def __call__(self, x, timesteps=None, context=None, y=None, deep=None):
        unet, module = self.unet, _host_module(self.unet)
        emb, _h, skips = _down(unet, module, unet.input_blocks[: self.branch + 1], x, timesteps, context, y)
        h = deep
        for block in unet.output_blocks[len(unet.output_blocks) - 1 - self.branch :]:
            h = block(module.th.cat([h, skips.pop()], dim=1), emb, context)
        return _final(unet, h, x)


def _shape(value: object) -> tuple | None:
    return (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else None


@dataclass
class DeepCacheCounts:
    """UNet calls that ran the whole UNet and calls that ran only the shallow branch."""

    full: int = 0
    shallow: int = 0

    def as_json(self) -> dict:
        return {"full": self.full, "shallow": self.shallow}


@dataclass
class _SlotCache:
    """The deep features of the last full step, per call slot; reset when the steps start over."""

    step: int = -1
    call: int = 0
    deep: dict = field(default_factory=dict)

    def slot(self, step: int, signature: tuple) -> tuple:
        if step < self.step:
            self.deep.clear()  # a new sampling run in the same pass
        if step != self.step:
            self.step, self.call = step, 0
        slot = (self.call, signature)
        self.call += 1
        return slot


class DeepCacheForward:
    """The instance forward apply_deepcache installs (see the module docstring)."""

    speedkit_wrapper = "speedkit-deepcache"

    def __init__(
        self, unet: torch.nn.Module, config: DeepCacheConfig, clock: StepClock, graphed: GraphedForward | None
    ):
        self.config = config
        self.clock = clock
        self.graphed = graphed
        self.full_step = FullStep(unet, config.branch)
        self.shallow_step = ShallowStep(unet, config.branch)
        self.cache = _SlotCache()
        self.counts = DeepCacheCounts()

    def __call__(self, x, timesteps=None, context=None, y=None, **_ignored):
        step, total = self.clock()
        slot = self.cache.slot(step, (_shape(x), _shape(context), _shape(y)))
        deep = None if self.config.full_step(step, total) else self.cache.deep.get(slot)
        if deep is None:
            output, self.cache.deep[slot] = self._run("full", self.full_step, (x, timesteps, context, y))
            self.counts.full += 1
            return output
        self.counts.shallow += 1
        return self._run("shallow", self.shallow_step, (x, timesteps, context, y), {"deep": deep})

    def _run(self, kind: str, step: Callable, args: tuple, kwargs: dict | None = None):
        kwargs = kwargs or {}
        if self.graphed is None:
            return step(*args, **kwargs)
        return self.graphed.route(step, ("deepcache", kind, self.config.branch), args, kwargs)


def counting_clock() -> StepClock:
    """Every UNet call is a new step, the total unknown (the library without a host)."""
    calls = [-1]

    def clock() -> tuple[int, None]:
        calls[0] += 1
        return calls[0], None

    return clock


def deepcache_forward_of(unet: torch.nn.Module) -> DeepCacheForward | None:
    forward = unet.__dict__.get("forward")
    return forward if isinstance(forward, DeepCacheForward) else None


def apply_deepcache(unet: torch.nn.Module, config: DeepCacheConfig, clock: StepClock | None = None) -> Undo:
    """Run `unet` with DeepCache until the undo; `clock` gives the step of each call (default:
    one step per call). Rides on the CUDA graph when that is applied first. FeatureSkipped (with
    the reason) when it cannot be correct here: an unknown layout, a branch deeper than the UNet,
    or another extension's forward on the UNet instance (that code would no longer run)."""
    if not config.caches:
        return Undo.nothing("deepcache off for this pass")
    reason = layout_reason(unet, config.branch)
    if reason is not None:
        raise FeatureSkipped(f"DeepCache not used for this pass: {reason}")
    SLOTS.release(unet, "deepcache")
    previous = unet.__dict__.get("forward")
    if previous is not None and graphed_forward_of(unet) is None and not is_class_forward(unet, previous):
        raise FeatureSkipped(
            f"DeepCache not used for this pass: another extension replaced the UNet's forward ({code_name(previous)})"
        )
    wrapper = DeepCacheForward(unet, config, clock or counting_clock(), graphed_forward_of(unet))
    unet.forward = wrapper

    def remove() -> None:
        if unet.__dict__.get("forward") is wrapper:
            if previous is None:
                del unet.__dict__["forward"]
            else:
                unet.forward = previous

    return SLOTS.occupy(unet, "deepcache", remove, f"deepcache every {config.interval}")
