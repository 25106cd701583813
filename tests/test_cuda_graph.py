"""The CUDA-graph fast path's cache, keys and fallbacks, on CPU.

A CUDA graph cannot be captured without a GPU, so these tests use a stand-in capturer that
behaves like one where it matters: a replay reads only the static input buffers and writes only
the static output buffer. The real capture and its numerics are checked on the GPU by
benchmarks/unet_step.py (docs/BENCHMARKS.md).
"""

import pytest
import torch

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


class StandInGraph:
    """Replays by re-running the forward on the static inputs into the static output."""

    def __init__(self, forward, args, kwargs):
        self.forward, self.static_args, self.static_kwargs = forward, args, kwargs
        self.output = forward(*args, **kwargs)
        self.replays = 0

    def replay(self):
        self.replays += 1
        self.output.copy_(self.forward(*self.static_args, **self.static_kwargs))


class StandInCapturer:
    device_type = "cpu"

    def __init__(self, fail_with: BaseException | None = None):
        self.fail_with = fail_with
        self.captured: list[StandInGraph] = []
        self.released = 0

    def capture(self, forward, args, kwargs):
        if self.fail_with is not None:
            raise self.fail_with
        graph = StandInGraph(forward, args, kwargs)
        self.captured.append(graph)
        return graph

    def capturing(self):
        return False

    def release(self):
        self.released += 1


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
    assert reasons[1].startswith("capture failed earlier:")


def test_out_of_memory_while_capturing_releases_the_graphs_and_continues_eagerly(unet):
    capturer = StandInCapturer(fail_with=torch.OutOfMemoryError("CUDA out of memory"))
    cache = GraphCache(capturer)
    expected = call(unet)
    apply_cuda_graph(unet, cache, "ctx")
    assert torch.equal(call(unet), expected)
    assert capturer.released == 1
    assert "out of memory while capturing" in next(iter(cache.failed.values()))


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
    with apply_channels_last(unet, True):  # new weight storage: the old graphs would read stale memory
        assert module_fingerprint(unet) != base


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
