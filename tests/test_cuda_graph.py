"""The CUDA-graph fast path's cache, keys and fallbacks, on CPU.

A CUDA graph cannot be captured without a GPU, so these tests use a stand-in capturer that
behaves like one where it matters: the call is frozen at capture (Python state included), a
replay reads only the static input buffers and writes only the static output buffer. The real
capture and its numerics are checked on the GPU by benchmarks/unet_step.py (docs/BENCHMARKS.md).
"""

import pytest
import torch
from graph_standins import StandInCapturer

from lib_speedkit.attention import apply_attention
from lib_speedkit.cuda_graph import (
    GraphCache,
    NotGraphable,
    apply_cuda_graph,
    call_signature,
    graphed_forward_of,
    module_fingerprint,
)
from lib_speedkit.errors import SpeedkitError
from lib_speedkit.memory_format import apply_channels_last
from lib_speedkit.plan import TokenMergingConfig
from lib_speedkit.snapshot import ModuleSnapshot
from lib_speedkit.tome import apply_tome
from tiny_models import unet_inputs


@pytest.fixture
def cache():
    return GraphCache(StandInCapturer(), max_graphs=3)


def call(unet, batch=2, seed=7):
    x, timesteps, context = unet_inputs(batch, seed)
    with torch.no_grad():
        return unet(x, timesteps, context=context)


def test_replays_give_the_eager_output_for_new_input_values(unet, cache):
    eager = [call(unet, seed=seed) for seed in (1, 2, 3)]
    apply_cuda_graph(unet, cache, "ctx")
    graphed = [call(unet, seed=seed) for seed in (1, 2, 3)]
    for expected, actual in zip(eager, graphed, strict=True):
        assert torch.equal(expected, actual)
    assert cache.stats.captures == 1 and cache.stats.replays == 3


def test_each_returned_output_is_its_own_tensor_not_the_static_buffer(unet, cache):
    apply_cuda_graph(unet, cache, "ctx")
    first = call(unet, seed=1)
    kept = first.clone()
    call(unet, seed=2)
    assert torch.equal(first, kept)


def test_a_new_batch_size_resolution_or_context_key_gets_its_own_graph(unet, cache):
    state = {"key": "a"}
    apply_cuda_graph(unet, cache, lambda: state["key"])
    call(unet, batch=2)
    call(unet, batch=2, seed=9)
    call(unet, batch=1)
    state["key"] = "b"
    call(unet, batch=1)
    assert cache.stats.captures == 3
    assert len(cache) == 3


def test_the_cache_keeps_at_most_max_graphs_least_recently_used_first(unet, cache):
    state = {"key": 0}
    apply_cuda_graph(unet, cache, lambda: state["key"])
    for key in (0, 1, 2, 0, 3):  # 1 is the least recently used when 3 arrives
        state["key"] = key
        call(unet, batch=1)
    kept = {key[0] for key in cache.graphs}
    assert kept == {0, 2, 3}


def test_calls_a_graph_cannot_serve_run_eagerly_with_the_reason():
    cache = GraphCache(StandInCapturer())
    linear = torch.nn.Linear(4, 4)
    apply_cuda_graph(linear, cache, "ctx")
    x = torch.randn(2, 4)
    assert torch.equal(linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias))  # grad on
    with torch.no_grad():
        linear(x)
    assert cache.stats.eager_calls == {"gradients are enabled": 1}
    assert cache.stats.captures == 1


def test_tensors_on_another_device_than_the_capturer_s_are_not_graphed(unet):
    capturer = StandInCapturer()
    capturer.device_type = "cuda"
    cache = GraphCache(capturer)
    apply_cuda_graph(unet, cache, "ctx")
    call(unet)
    assert cache.stats.captures == 0
    assert list(cache.stats.eager_calls) == ["argument 0 is on cpu, not on a CUDA device"]


def test_an_argument_that_is_not_a_tensor_or_plain_value_prevents_a_graph():
    with torch.no_grad(), pytest.raises(NotGraphable, match="'control' is a list"):
        call_signature((torch.zeros(1),), {"control": [torch.zeros(1)]}, "cpu")


def test_plain_values_are_part_of_the_key():
    with torch.no_grad():
        a = call_signature((torch.zeros(1),), {"scale": 1.0}, "cpu")
        b = call_signature((torch.zeros(1),), {"scale": 2.0}, "cpu")
    assert a != b


def test_a_failed_capture_runs_eagerly_and_is_not_retried(unet):
    capturer = StandInCapturer(fail_with=RuntimeError("operation not permitted when stream is capturing"))
    cache = GraphCache(capturer)
    expected = call(unet)
    apply_cuda_graph(unet, cache, "ctx")
    assert torch.equal(call(unet), expected)
    assert torch.equal(call(unet), expected)
    assert cache.stats.captures == 0
    reasons = list(cache.stats.eager_calls)
    assert reasons[0].startswith("capture failed: RuntimeError: operation not permitted")
    assert reasons[1].startswith("capture failed earlier in this pass:")  # no key work any more


class NumberedFailures(StandInCapturer):
    """Every capture fails, each with its own message."""

    def capture(self, forward, args, kwargs):
        self.attempts += 1
        raise RuntimeError(f"failure {self.attempts}")


def test_a_pass_that_steps_aside_names_its_own_failure_not_an_earlier_one(unet):
    cache = GraphCache(NumberedFailures())
    with apply_cuda_graph(unet, cache, "first pass"):
        call(unet, batch=2)  # failure 1, shapes of batch 2
    with apply_cuda_graph(unet, cache, "second pass"):
        call(unet, batch=1)  # failure 2, other shapes
    with apply_cuda_graph(unet, cache, "third pass"):
        call(unet, batch=2)  # failure 3: the shapes of failure 1, in another context
        assert graphed_forward_of(unet).gave_up.endswith("RuntimeError: failure 3")


def test_out_of_memory_while_capturing_frees_every_graph_tries_once_more_then_runs_eagerly(unet):
    capturer = StandInCapturer(fail_with=torch.OutOfMemoryError("CUDA out of memory"))
    cache = GraphCache(capturer)
    expected = call(unet)
    apply_cuda_graph(unet, cache, "ctx")
    assert torch.equal(call(unet), expected)
    assert capturer.attempts == 2 and capturer.released == 2  # freed, retried, freed again
    assert "out of memory while capturing" in next(iter(cache.failed.values()))


def test_a_capture_that_fits_once_the_old_graphs_are_freed_succeeds(unet):
    capturer = StandInCapturer(fail_with=torch.OutOfMemoryError("CUDA out of memory"), failures=1)
    cache = GraphCache(capturer)
    expected = call(unet)
    apply_cuda_graph(unet, cache, "ctx")
    assert torch.equal(call(unet), expected)
    assert cache.stats.captures == 1 and capturer.released == 1 and not cache.failed


def test_graphs_beyond_the_memory_budget_are_evicted_least_recently_used_first(unet):
    one_graph = None
    state = {"key": 0}
    cache = GraphCache(StandInCapturer(), max_graphs=8)
    apply_cuda_graph(unet, cache, lambda: state["key"])
    call(unet, batch=1)
    one_graph = cache.nbytes
    cache.max_bytes = int(2.5 * one_graph)
    for key in (1, 0, 2):  # 1 becomes the least recently used when 2 arrives
        state["key"] = key
        call(unet, batch=1)
    assert {key[0] for key in cache.graphs} == {0, 2} and cache.stats.evictions == 1
    assert cache.nbytes <= cache.max_bytes


def test_release_drops_every_graph(unet, cache):
    apply_cuda_graph(unet, cache, "ctx")
    call(unet)
    cache.release()
    assert len(cache) == 0 and cache.capturer.released == 1


def test_the_undo_restores_the_module_exactly_and_hooks_run_on_every_call(unet, cache, assert_clean):
    before = ModuleSnapshot.capture(unet)
    calls = []
    hook = unet.register_forward_pre_hook(lambda _module, args: calls.append(args[0].shape[0]))
    undo = apply_cuda_graph(unet, cache, "ctx")
    call(unet)
    call(unet)
    assert calls == [2, 2] and cache.stats.replays == 2
    undo()
    hook.remove()
    assert graphed_forward_of(unet) is None
    assert_clean(unet, before)


def test_applying_twice_replaces_the_first_application(unet, cache, assert_clean):
    before = ModuleSnapshot.capture(unet)
    first = apply_cuda_graph(unet, cache, "a")
    second = apply_cuda_graph(unet, cache, "b")
    call(unet)
    assert next(iter(cache.graphs))[0] == "b"
    first()  # superseded: must not remove the second
    assert graphed_forward_of(unet) is not None
    second()
    assert_clean(unet, before)


def test_a_forward_replaced_by_another_extension_is_refused(unet, cache):
    unet.forward = lambda *args, **kwargs: None
    with pytest.raises(SpeedkitError, match="already replaced by another extension"):
        apply_cuda_graph(unet, cache, "ctx")


def test_the_fingerprint_sees_what_a_graph_cannot(unet):
    base = module_fingerprint(unet)
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)  # in place: a replay reads the new values, no new graph needed
    assert module_fingerprint(unet) == base
    with apply_attention(unet, "sdp-math", None):
        assert module_fingerprint(unet) != base
    assert module_fingerprint(unet) == base
    with apply_tome(unet, TokenMergingConfig(ratio=0.5)):
        assert module_fingerprint(unet) != base
    assert module_fingerprint(unet) == base
    handle = unet.output_blocks[0].register_forward_hook(lambda *a: None)  # inside the graph
    assert module_fingerprint(unet) != base
    handle.remove()
    with unet.register_forward_pre_hook(lambda *a: None):  # the root's hooks run eagerly
        assert module_fingerprint(unet) == base
    assert module_fingerprint(unet) == base
    with apply_channels_last(unet, True):  # same storage, new strides: kernels read the memory differently
        assert module_fingerprint(unet) != base


def test_torch_compiles_own_patch_of_module_construction_keeps_the_fingerprint(unet, monkeypatch):
    """torch._dynamo replaces nn.Module.__init__ and __setstate__ on its first compile; no forward
    runs them, so graphs keep their key (else every graph compiled and captured once more)."""
    base = module_fingerprint(unet)
    init, setstate = torch.nn.Module.__init__, torch.nn.Module.__setstate__
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda self, *a, **k: init(self, *a, **k))
    monkeypatch.setattr(torch.nn.Module, "__setstate__", lambda self, state: setstate(self, state))
    assert module_fingerprint(unet) == base
    forward = torch.nn.Module.__call__
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda self, *a, **k: forward(self, *a, **k))
    assert module_fingerprint(unet) != base  # what a forward runs still counts


def test_a_cache_needs_room_for_one_graph():
    with pytest.raises(SpeedkitError, match="max_graphs"):
        GraphCache(StandInCapturer(), max_graphs=0)


def test_tome_settings_are_a_key_of_their_own_since_the_ratio_does_not_change_the_module_tree(unet):
    from lib_speedkit.tome import tome_settings_key

    assert tome_settings_key(unet) == ()
    with apply_tome(unet, TokenMergingConfig(ratio=0.5)):
        half = tome_settings_key(unet)
    with apply_tome(unet, TokenMergingConfig(ratio=0.3)):
        assert tome_settings_key(unet) not in ((), half)


def test_tome_applied_again_with_the_same_settings_keeps_the_fingerprint(unet):
    """tomesd builds new block classes on every apply; the same code must not mean a new graph."""
    with apply_tome(unet, TokenMergingConfig(ratio=0.5)):
        first = module_fingerprint(unet)
    with apply_tome(unet, TokenMergingConfig(ratio=0.5)):
        assert module_fingerprint(unet) == first


def test_two_attention_backends_from_the_same_factory_have_different_fingerprints(unet):
    with apply_attention(unet, "sdp", None):
        sdp = module_fingerprint(unet)
    with apply_attention(unet, "sdp-math", None):
        assert module_fingerprint(unet) != sdp


class FlagTiling:
    """Like the WebUI's Hypertile: an instance-level forward wrapper whose behaviour depends on a
    Python flag flipped between generations (no weight, class or hook changes)."""

    def __init__(self, module):
        self.enabled = False
        self.inner = module.forward

    def __call__(self, x, *args, **kwargs):
        if self.enabled:
            x = x.flip(1)  # stands for a different tiling of the tokens
        return self.inner(x, *args, **kwargs)


def _attention_module(unet):
    return next(m for n, m in unet.named_modules() if n.endswith("attn1"))


def test_the_stand_in_freezes_python_state_so_a_stale_key_shows(unet, cache):
    """What the host must never allow: the key misses the flag, so the replay is stale."""
    tiling = FlagTiling(_attention_module(unet))
    _attention_module(unet).forward = tiling
    apply_cuda_graph(unet, cache, "same key whatever the flag")
    call(unet)  # captured with the flag off
    tiling.enabled = True
    replayed = call(unet)
    x, timesteps, context = unet_inputs(2, 7)
    with torch.no_grad():
        eager_now = type(unet).forward(unet, x, timesteps, context=context)
    assert cache.stats.captures == 1 and cache.stats.replays == 2
    assert not torch.equal(replayed, eager_now)


def test_instance_level_forwards_inside_the_unet_are_found_and_keep_the_library_graph_off(unet):
    from lib_speedkit.apply import apply_plan, library_appliers
    from lib_speedkit.cuda_graph import instance_forwards
    from lib_speedkit.plan import CudaGraphConfig, SpeedPlan

    assert instance_forwards(unet) == {}
    module = _attention_module(unet)
    module.forward = FlagTiling(module)
    assert list(instance_forwards(unet)) == [next(n for n, m in unet.named_modules() if m is module)]
    appliers = library_appliers(graphs=GraphCache(StandInCapturer()))
    with apply_plan(unet, SpeedPlan(cuda_graph=CudaGraphConfig(True)), appliers=appliers) as applied:
        assert "cuda_graph" not in applied.applied
        assert "replaced on the instance" in applied.skipped["cuda_graph"]
        assert graphed_forward_of(unet) is None


def test_the_reason_names_the_unet_and_the_code_when_an_extension_replaced_the_unet_forward(unet):
    # What ControlNet does for every generation with a unit: its own function bound to the UNet.
    from lib_speedkit.apply import replaced_forwards_reason

    def forward_webui(self, x, timesteps=None, context=None, **kwargs):
        return type(self).forward(self, x, timesteps, context, **kwargs)

    unet.forward = forward_webui.__get__(unet)
    reason = replaced_forwards_reason(unet)
    assert reason.startswith("another extension replaced the UNet's forward (")
    assert "forward_webui" in reason


def test_the_reason_names_a_replaced_submodule_and_its_code(unet):
    from lib_speedkit.apply import replaced_forwards_reason

    module = _attention_module(unet)
    module.forward = FlagTiling(module)
    name = next(n for n, m in unet.named_modules() if m is module)
    assert f"(e.g. {name} by " in replaced_forwards_reason(unet)
    assert "FlagTiling" in replaced_forwards_reason(unet)


def test_a_forward_put_back_as_the_bound_class_method_is_not_a_replacement(unet, cache, assert_clean):
    """ControlNet restores `model.forward = model._original_forward`: the plain forward again."""
    unet.forward = type(unet).forward.__get__(unet)
    before = ModuleSnapshot.capture(unet)
    undo = apply_cuda_graph(unet, cache, "ctx")
    call(unet)
    assert cache.stats.captures == 1
    undo()
    assert_clean(unet, before)


def test_an_argument_with_overlapping_memory_runs_eagerly_instead_of_failing(cache):
    linear = torch.nn.Linear(4, 4)
    apply_cuda_graph(linear, cache, "ctx")
    x = torch.randn(1, 4).expand(3, 4)  # every row is the same memory
    with torch.no_grad():
        out = linear(x)
    assert torch.equal(out, torch.nn.functional.linear(x, linear.weight, linear.bias))
    assert cache.stats.captures == 0 and len(cache.stats.eager_calls) == 1


@pytest.mark.parametrize(("version", "supported"), [("2.1.2+cu121", False), ("2.3.1", False), ("2.4.0", True)])
def test_the_fast_path_states_the_torch_it_needs(monkeypatch, version, supported):
    """A1111 1.10.1's installer brings torch 2.1.2, whose autocast queries take no device type."""
    from lib_speedkit.cuda_graph import graph_support

    monkeypatch.setattr(torch, "__version__", version)
    reason = graph_support("cpu")
    assert (reason is None) is supported
    if not supported:
        assert reason == f"the CUDA-graph fast path needs torch >= 2.4 (this WebUI runs torch {version})"


def test_on_an_old_torch_the_library_leaves_the_graph_out_with_the_reason(unet, monkeypatch):
    from lib_speedkit.apply import apply_plan, library_appliers
    from lib_speedkit.plan import CudaGraphConfig, SpeedPlan

    monkeypatch.setattr(torch, "__version__", "2.1.2")
    appliers = library_appliers(graphs=GraphCache(StandInCapturer()))
    with apply_plan(unet, SpeedPlan(cuda_graph=CudaGraphConfig(True)), appliers=appliers) as applied:
        assert "needs torch >= 2.4" in applied.skipped["cuda_graph"]
        assert graphed_forward_of(unet) is None
