"""DeepCache on a tiny real ldm UNet (every parameter random): what a full and a shallow step
compute, which steps are full, per-call caches, undo, and the CUDA graph's two graphs (played by
the CPU stand-in)."""

from __future__ import annotations

import sys

import pytest
import torch
from graph_standins import StandInCapturer

from lib_speedkit.apply import apply_plan, library_appliers
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph, module_fingerprint
from lib_speedkit.deepcache import (
    DeepCacheForward,
    FullStep,
    ShallowStep,
    apply_deepcache,
    deepcache_forward_of,
    layout_reason,
)
from lib_speedkit.errors import FeatureSkipped
from lib_speedkit.plan import DeepCacheConfig, SpeedPlan, TokenMergingConfig
from lib_speedkit.snapshot import ModuleSnapshot
from lib_speedkit.tome import apply_tome
from tiny_models import unet_inputs

BLOCKS = 4  # the tiny UNet's skip connections


def inputs(seed=7, batch=2):
    return unet_inputs(batch, seed)


def own_output(unet, seed=7, batch=2):
    x, timesteps, context = inputs(seed, batch)
    with torch.no_grad():
        return type(unet).forward(unet, x, timesteps, context=context)


class Clock:
    """The host's step counter, set by the test."""

    def __init__(self, total=None):
        self.step, self.total = 0, total

    def __call__(self):
        return self.step, self.total


@pytest.mark.parametrize("branch", range(BLOCKS))
def test_a_full_step_gives_exactly_the_unets_own_output(unet, branch):
    x, timesteps, context = inputs()
    with torch.no_grad():
        output, deep = FullStep(unet, branch)(x, timesteps, context)
    assert torch.equal(output, own_output(unet))
    assert deep.shape[0] == x.shape[0]


@pytest.mark.parametrize("branch", range(BLOCKS))
def test_a_shallow_step_on_the_full_steps_own_input_reproduces_its_output(unet, branch):
    """The split is exact: the shallow branch plus the cached deep features is the whole UNet."""
    x, timesteps, context = inputs()
    with torch.no_grad():
        output, deep = FullStep(unet, branch)(x, timesteps, context)
        shallow = ShallowStep(unet, branch)(x, timesteps, context, deep=deep)
    assert torch.equal(shallow, output)


def blocks_run(unet, run):
    """Which of the UNet's blocks a call runs (names, in order)."""
    names = {id(block): f"in{i}" for i, block in enumerate(unet.input_blocks)}
    names |= {id(block): f"out{i}" for i, block in enumerate(unet.output_blocks)}
    names[id(unet.middle_block)] = "middle"
    seen = []
    handles = [
        module.register_forward_pre_hook(lambda m, _args: seen.append(names[id(m)]))
        for module in (*unet.input_blocks, unet.middle_block, *unet.output_blocks)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("branch", [0, 2])
def test_a_shallow_step_runs_only_the_blocks_above_its_branch(unet, branch):
    x, timesteps, context = inputs()
    with torch.no_grad():
        _, deep = FullStep(unet, branch)(x, timesteps, context)
    seen = blocks_run(unet, lambda: ShallowStep(unet, branch)(x, timesteps, context, deep=deep))
    shallow_inputs = [f"in{i}" for i in range(branch + 1)]
    shallow_outputs = [f"out{i}" for i in range(BLOCKS - 1 - branch, BLOCKS)]
    assert seen == shallow_inputs + shallow_outputs


def test_the_steps_use_the_concatenation_the_unets_module_provides(unet, monkeypatch):
    """A1111 replaces `openaimodel.th` with a torch whose cat resizes odd sizes: DeepCache's steps
    must go through it as the UNet's own forward does."""
    module = sys.modules[type(unet).__module__]
    cats = []

    class RecordingTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        def cat(self, tensors, *args, **kwargs):
            cats.append(len(tensors))
            return torch.cat(tensors, *args, **kwargs)

    monkeypatch.setattr(module, "th", RecordingTorch())
    x, timesteps, context = inputs()
    with torch.no_grad():
        FullStep(unet, 0)(x, timesteps, context)
    assert cats == [2] * BLOCKS


def test_which_steps_run_fully():
    config = DeepCacheConfig(interval=3, start=2, end=2)
    assert [config.full_step(step, 12) for step in range(12)] == [
        True, True,  # the start window
        True, False, False, True, False, False, True, False,  # every third from step 2 on
        True, True,  # the end window
    ]  # fmt: skip
    assert [config.full_step(step, None) for step in range(10, 13)] == [False, True, False]  # no total: no end


def test_with_interval_3_one_call_in_three_runs_the_whole_unet(unet):
    clock = Clock(total=9)
    apply_deepcache(unet, DeepCacheConfig(interval=3), clock)
    outputs = []
    for step in range(9):
        clock.step = step
        x, timesteps, context = inputs(seed=100 + step)
        with torch.no_grad():
            outputs.append(unet(x, timesteps, context=context))
    counts = deepcache_forward_of(unet).counts
    assert (counts.full, counts.shallow) == (3, 6)
    for step, output in enumerate(outputs):
        exact = torch.equal(output, own_output(unet, seed=100 + step))
        assert exact == (step % 3 == 0), step  # shallow steps reuse older deep features: not exact
        assert torch.isfinite(output).all()


def test_each_call_of_a_step_has_its_own_cache(unet):
    """A host that runs cond and uncond as two calls per step: each shallow call reuses the deep
    features of its own call of the last full step (the same input reproduces its full output)."""
    clock = Clock()
    apply_deepcache(unet, DeepCacheConfig(interval=2), clock)
    first, second = inputs(seed=1), inputs(seed=2)
    with torch.no_grad():
        full = [unet(x, t, context=c) for x, t, c in (first, second)]
        clock.step = 1
        shallow = [unet(x, t, context=c) for x, t, c in (first, second)]
    assert torch.equal(shallow[0], full[0]) and torch.equal(shallow[1], full[1])
    assert deepcache_forward_of(unet).counts.shallow == 2


def test_a_call_whose_batch_changed_runs_the_whole_unet(unet):
    """The guidance cutoff halves the batch: nothing cached for that shape, so a full step."""
    clock = Clock()
    apply_deepcache(unet, DeepCacheConfig(interval=4), clock)
    with torch.no_grad():
        x, t, c = inputs(batch=2)
        unet(x, t, context=c)
        clock.step = 1
        x, t, c = inputs(batch=1)
        output = unet(x, t, context=c)
    assert torch.equal(output, own_output(unet, batch=1))
    assert deepcache_forward_of(unet).counts.full == 2


def test_steps_that_start_over_drop_the_cache(unet):
    clock = Clock()
    apply_deepcache(unet, DeepCacheConfig(interval=3), clock)
    with torch.no_grad():
        for step in (0, 1, 2):
            clock.step = step
            unet(*inputs()[:2], context=inputs()[2])
        clock.step = 1  # a new run whose first call the host counts as step 1
        output = unet(*inputs(seed=5)[:2], context=inputs(seed=5)[2])
    assert torch.equal(output, own_output(unet, seed=5))


def test_the_undo_leaves_the_unet_exactly_as_it_was_and_applying_twice_is_safe(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    apply_deepcache(unet, DeepCacheConfig(interval=2))
    undo = apply_deepcache(unet, DeepCacheConfig(interval=3))
    assert deepcache_forward_of(unet).config.interval == 3
    undo()
    undo()
    assert "forward" not in unet.__dict__
    assert_clean(unet, before)
    assert torch.equal(unet(*inputs()[:2], context=inputs()[2]), own_output(unet))


def test_another_extensions_forward_on_the_unet_keeps_deepcache_off_and_says_whose(unet):
    def control_forward(*args, **kwargs):
        return type(unet).forward(unet, *args, **kwargs)

    unet.forward = control_forward
    with pytest.raises(FeatureSkipped, match=r"another extension replaced the UNet's forward \(.*control_forward"):
        apply_deepcache(unet, DeepCacheConfig(interval=3))
    assert unet.forward is control_forward


def test_a_branch_deeper_than_the_unet_is_left_out_with_the_reason(unet):
    assert layout_reason(unet, BLOCKS - 1) is None
    with pytest.raises(FeatureSkipped, match=r"deepcache\.branch 11 is deeper than this UNet's 4 skip connections"):
        apply_deepcache(unet, DeepCacheConfig(interval=3, branch=11))
    assert deepcache_forward_of(unet) is None


def test_a_module_that_is_no_unet_is_refused_with_the_reason():
    assert "not an ldm/sgm UNet" in layout_reason(torch.nn.Linear(2, 2), 0)


def test_deepcache_rides_on_tome(unet):
    apply_tome(unet, TokenMergingConfig(ratio=0.5))
    with torch.no_grad():
        merged = unet(*inputs()[:2], context=inputs()[2])
    apply_deepcache(unet, DeepCacheConfig(interval=3))
    with torch.no_grad():
        first = unet(*inputs()[:2], context=inputs()[2])
    assert torch.equal(first, merged)


def run_steps(unet, clock, steps=6):
    outputs = []
    for step in range(steps):
        clock.step = step
        x, timesteps, context = inputs(seed=200 + step)
        with torch.no_grad():
            outputs.append(unet(x, timesteps, context=context))
    return outputs


def test_with_the_graph_full_and_shallow_steps_are_two_graphs_that_replay_eager_deepcache(unet):
    clock = Clock(total=6)
    config = DeepCacheConfig(interval=3)
    eager_undo = apply_deepcache(unet, config, clock)
    eager = run_steps(unet, clock)
    eager_undo()

    cache = GraphCache(StandInCapturer())
    plan = SpeedPlan(cuda_graph=SpeedPlan().cuda_graph.__class__(True), deepcache=config)
    with apply_plan(unet, plan, appliers=library_appliers(graphs=cache, clock=clock)) as applied:
        assert {"cuda_graph", "deepcache"} <= applied.applied
        assert isinstance(unet.forward, DeepCacheForward) and unet.forward.graphed is not None
        graphed = run_steps(unet, clock)
    for expected, actual in zip(eager, graphed, strict=True):
        assert torch.equal(expected, actual)
    assert cache.stats.captures == 2 and cache.stats.replays == 6
    assert "forward" not in unet.__dict__


def test_the_graphs_key_is_the_same_with_deepcache_on_the_unet(unet):
    """DeepCache's forward is Speedkit's own: it never makes the graph key look like a new UNet."""
    cache = GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, "ctx")
    before = module_fingerprint(unet)
    apply_deepcache(unet, DeepCacheConfig(interval=2))
    assert module_fingerprint(unet) == before


def test_a_hires_only_config_leaves_the_first_pass_alone(unet):
    config = DeepCacheConfig(interval=1, hr_interval=3)
    assert config.enabled and not config.caches
    apply_deepcache(unet, config)
    assert deepcache_forward_of(unet) is None
    apply_deepcache(unet, config.for_hires_pass())
    assert deepcache_forward_of(unet).config.interval == 3
