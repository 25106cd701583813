"""The compiled UNet's plumbing on the CPU: what is compiled once, what the graphs capture, the
fallback when compiling fails, and why it cannot run. torch.compile's inductor itself needs a GPU
here (triton); its speed and numerics are measured on one (docs/BENCHMARKS.md)."""

from __future__ import annotations

import builtins
import shutil
import sys
import threading

import pytest
import torch
from graph_standins import StandInCapturer

from lib_speedkit.compiled import CompiledForward, Compiler, apply_compiled, compile_support, inductor
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph, module_fingerprint
from lib_speedkit.deepcache import apply_deepcache
from lib_speedkit.errors import FeatureSkipped
from lib_speedkit.plan import DeepCacheConfig
from tiny_models import unet_inputs


class RecordingCompile:
    """A compile function that records what it was given and returns it unchanged."""

    def __init__(self):
        self.given = []

    def __call__(self, forward):
        self.given.append(forward)
        return forward


def call(unet, seed=7):
    x, timesteps, context = unet_inputs(2, seed)
    with torch.no_grad():
        return unet(x, timesteps, context=context)


def test_the_graph_captures_the_compiled_forward_compiled_once_per_module(unet):
    compile_fn = RecordingCompile()
    compiler, cache = Compiler(compile_fn), GraphCache(StandInCapturer())
    eager = call(unet)
    for _pass in range(2):  # two sampling passes: the compiled forward is kept
        undo_graph = apply_cuda_graph(unet, cache, "ctx")
        undo_compiled = apply_compiled(unet, compiler)
        assert torch.equal(call(unet), eager)
        undo_compiled()
        undo_graph()
    assert len(compile_fn.given) == 1 and compile_fn.given[0].__self__ is unet
    assert cache.stats.captures == 1 and cache.stats.replays == 2
    (key,) = cache.graphs
    assert key[0] == ("ctx", ("compiled", None))  # never replayed for the uncompiled UNet


def test_deepcache_on_the_compiled_unet_compiles_its_full_and_shallow_steps(unet):
    compile_fn = RecordingCompile()
    cache = GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, "ctx")
    apply_compiled(unet, Compiler(compile_fn))
    apply_deepcache(unet, DeepCacheConfig(interval=2))
    call(unet, seed=1)
    call(unet, seed=2)
    assert [type(forward).__name__ for forward in compile_fn.given] == ["FullStep", "ShallowStep"]
    assert cache.stats.captures == 2


def test_without_the_graph_there_is_nothing_to_compile_into(unet):
    with pytest.raises(FeatureSkipped, match="the CUDA graph is not used"):
        apply_compiled(unet, Compiler(RecordingCompile()))


def test_a_forward_whose_compiling_fails_runs_uncompiled_from_then_on_and_says_why():
    import torch._dynamo.exc

    calls = []

    def broken(*_args):
        calls.append("compiled")
        raise torch._dynamo.exc.TorchDynamoException("inductor: triton found no GPU")

    failures = []
    forward = CompiledForward(lambda x: x + 1, broken, failures.append)
    assert forward(1) == 2 and forward(2) == 3
    assert calls == ["compiled"]  # tried once
    assert forward.failure == "TorchDynamoException: inductor: triton found no GPU"
    assert failures == [forward.failure]


def test_the_unets_own_errors_are_not_mistaken_for_compile_failures():
    def out_of_memory(*_args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    forward = CompiledForward(lambda x: x, out_of_memory, lambda reason: None)
    with pytest.raises(torch.OutOfMemoryError):
        forward(1)
    assert forward.failure is None


def test_inductor_compiles_per_static_shape_with_room_for_sdxls_blocks(monkeypatch):
    import torch._dynamo

    seen = {}
    monkeypatch.setattr(torch, "compile", lambda forward, **options: seen.update(options) or forward)
    from lib_speedkit.compiled import recompile_limit_name

    name = recompile_limit_name()
    with torch._dynamo.config.patch({name: 8}):  # not monkeypatch: its undo deletes a config entry
        inductor(lambda x: x)
        assert getattr(torch._dynamo.config, name) >= 64
    assert seen == {"dynamic": False}


def test_without_triton_the_reason_says_how_to_get_it(monkeypatch):
    real_import = builtins.__import__

    def no_triton(name, *args, **kwargs):
        if name == "triton":
            raise ImportError("No module named 'triton'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_triton)
    assert "needs triton" in compile_support() and "triton-windows" in compile_support()


def test_on_a1111s_own_torch_the_reason_names_the_torch_it_needs(monkeypatch):
    """A1111 1.10.1's installer brings torch 2.1.2: the switch is greyed out with this reason."""
    monkeypatch.setattr(torch, "__version__", "2.1.2+cu121")
    assert "needs torch >= 2.4" in compile_support() and "2.1.2" in compile_support()


def test_the_library_leaves_the_compiled_unet_out_where_the_graph_does_not_run(unet):
    from lib_speedkit.apply import apply_plan, library_appliers
    from lib_speedkit.plan import CompileConfig, CudaGraphConfig, SpeedPlan

    plan = SpeedPlan(cuda_graph=CudaGraphConfig(True), compile=CompileConfig(True))
    appliers = library_appliers(graphs=GraphCache(), compiler=Compiler(RecordingCompile()))  # a CUDA capturer
    with apply_plan(unet, plan, appliers=appliers) as applied:
        assert "CUDA" in applied.skipped["cuda_graph"]
        assert applied.skipped["compile"].endswith("the CUDA graph is not used (see its note)")
    assert "forward" not in unet.__dict__


class BlockingCompile:
    """A compile function whose compiled forward blocks on its first call of each shape until
    `release` is set (a compile that takes a while); it counts the compiled calls."""

    def __init__(self):
        self.release = threading.Event()
        self.compiled_calls = 0
        self.seen: set = set()

    def __call__(self, forward):
        def compiled(*args, **kwargs):
            shape = tuple(int(size) for size in args[0].shape)
            if shape not in self.seen:
                self.release.wait(30)
                self.seen.add(shape)
            self.compiled_calls += 1
            return forward(*args, **kwargs)

        return compiled


def test_an_interrupted_compile_runs_that_call_uncompiled_and_finishes_in_the_background(unet):
    compile_fn = BlockingCompile()
    compiler, cache = Compiler(compile_fn), GraphCache(StandInCapturer())
    announced, asked = [], []
    compiler.announce = lambda what, args: announced.append((what, tuple(args[0].shape)))
    compiler.interrupted = lambda: asked.append(1) or len(asked) > 2  # Interrupt pressed while waiting
    apply_cuda_graph(unet, cache, "ctx")
    apply_compiled(unet, compiler)
    eager = call(unet)  # interrupted: the UNet's own forward, no capture
    assert torch.equal(eager, call(unet))  # still compiling: uncompiled again, not waited for
    assert cache.stats.captures == 0 and compiler.interruptions == 1
    reasons = list(cache.stats.eager_calls)
    assert "compiling was interrupted" in reasons[0] and "still compiling" in reasons[1]
    assert announced == [("forward", (2, 4, 16, 16))]
    compile_fn.release.set()
    compiler.background.thread.join(10)
    assert torch.equal(call(unet), eager)  # compiled now: captured and replayed
    assert cache.stats.captures == 1 and cache.stats.replays == 1 and announced == [("forward", (2, 4, 16, 16))]


def test_a_compile_nobody_interrupts_is_waited_for_and_runs_once_per_shape(unet):
    compile_fn = BlockingCompile()
    compile_fn.release.set()
    compiler, cache = Compiler(compile_fn), GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, "ctx")
    apply_compiled(unet, compiler)
    call(unet)
    call(unet)
    assert compiler.background is None and not cache.stats.eager_calls
    assert cache.stats.captures == 1 and compile_fn.seen == {(2, 4, 16, 16)}


def test_a_compile_failure_on_the_worker_is_the_callers_note_and_the_graph_replays_the_original(unet):
    import torch._dynamo.exc

    def broken_compile(_forward):
        def compiled(*_args, **_kwargs):
            raise torch._dynamo.exc.TorchDynamoException("inductor: no triton")

        return compiled

    compiler, cache = Compiler(broken_compile), GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, "ctx")
    apply_compiled(unet, compiler)
    eager = call(unet)
    assert torch.equal(call(unet), eager)
    assert compiler.failures == ["TorchDynamoException: inductor: no triton"]
    assert cache.stats.captures == 1 and not cache.stats.eager_calls


def test_the_worker_runs_under_the_callers_gradient_and_autocast_state():
    seen = []

    def recording(*_args):
        seen.append((torch.is_grad_enabled(), threading.current_thread().name))

    forward = CompiledForward(lambda x: x, recording, lambda reason: None)
    compiler = Compiler(lambda f: f)
    with torch.no_grad():
        assert compiler.ready(forward, (torch.ones(2),), {}) is None
    assert seen == [(False, "speedkit-compile")]
    assert compiler.ready(forward, (torch.ones(2),), {}) is None and len(seen) == 1  # ready: not again


def test_switching_channels_last_compiles_again_for_the_new_weight_layout(unet):
    """torch._dynamo does not guard weight strides: kernels compiled for one layout assert them,
    so each layout gets its own compiled forward (and its own graph, keyed by the strides)."""
    from lib_speedkit.memory_format import apply_channels_last

    compile_fn = RecordingCompile()
    compiler, cache = Compiler(compile_fn), GraphCache(StandInCapturer())
    eager = call(unet)
    for channels_last in (False, True, False, True):
        with apply_channels_last(unet, channels_last):
            from lib_speedkit.cuda_graph import module_fingerprint

            undo_graph = apply_cuda_graph(unet, cache, module_fingerprint(unet))
            apply_compiled(unet, compiler)
            assert torch.allclose(call(unet), eager, atol=1e-5)
            undo_graph()
    assert len(compile_fn.given) == 2  # one per layout, kept when the layout comes back
    assert cache.stats.captures == 2


def test_each_compiled_forward_enters_through_a_code_object_of_its_own():
    from lib_speedkit.compiled import own_entry

    first, second = own_entry(lambda x: x + 1), own_entry(lambda x: x + 1)
    assert first(1) == 2 and second(1) == 2
    assert first.__code__ is not second.__code__ and first.__code__.co_name != second.__code__.co_name


def test_each_compile_waited_for_is_timed_with_its_shape(unet):
    compiler, cache = Compiler(RecordingCompile()), GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, "ctx")
    apply_compiled(unet, compiler)
    call(unet)
    call(unet)
    (entry,) = compiler.compiles
    assert entry.what == "forward"  # the UNet's own forward (DeepCache's steps and the decoder have names)
    assert entry.as_json()["shape"] == [2, 4, 16, 16] and entry.seconds >= 0


def test_a_new_graph_context_is_compiled_before_its_capture_not_inside_it(unet):
    """ToMe patches the UNet's blocks (the graph's key changes, the compiled forward's name does
    not): the compile for the new context runs where it is timed, announced and interruptible."""
    compiler, cache = Compiler(RecordingCompile()), GraphCache(StandInCapturer())
    announced = []
    compiler.announce = lambda what, args: announced.append(what)
    context = ["plain"]
    apply_cuda_graph(unet, cache, lambda: context[0])
    apply_compiled(unet, compiler)
    call(unet)
    context[0] = "tome 0.5"
    call(unet)
    assert len(announced) == 2 and len(compiler.compiles) == 2 and cache.stats.captures == 2


class Decoder(torch.nn.Module):
    """A stand-in for the VAE decoder: one conv."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, z):
        return self.conv(z)


def test_a_compiled_module_runs_compiled_without_a_graph_and_comes_off_exactly():
    from lib_speedkit.compiled_module import apply_compiled_module, remove_compiled_module

    decoder, compile_fn = Decoder(), RecordingCompile()
    z = torch.randn(1, 4, 8, 8)
    expected = decoder(z)
    wrapper = apply_compiled_module(decoder, Compiler(compile_fn), "vae decoder")
    assert torch.equal(decoder(z), expected) and torch.equal(decoder(z), expected)
    assert wrapper.compiled_calls == 2 and not wrapper.eager_calls and len(compile_fn.given) == 1
    remove_compiled_module(wrapper)
    assert "forward" not in decoder.__dict__
    again = apply_compiled_module(decoder, Compiler(compile_fn), "vae decoder")
    newer = apply_compiled_module(decoder, Compiler(compile_fn), "vae decoder")  # applying twice is safe
    assert decoder.__dict__["forward"] is newer and torch.equal(decoder(z), expected)
    remove_compiled_module(again)  # the older undo leaves the newer in place
    assert decoder.__dict__["forward"] is newer
    remove_compiled_module(newer)
    assert "forward" not in decoder.__dict__


def test_a_compiled_module_called_from_another_thread_runs_its_own_forward():
    from lib_speedkit.compiled_module import apply_compiled_module

    decoder = Decoder()
    wrapper = apply_compiled_module(decoder, Compiler(RecordingCompile()), "vae decoder")
    worker = threading.Thread(target=lambda: decoder(torch.randn(1, 4, 8, 8)))
    worker.start()
    worker.join()
    assert wrapper.compiled_calls == 0 and wrapper.eager_calls == {"called from another thread (a live preview)": 1}


def test_compiled_code_that_fails_hands_back_to_the_modules_own_forward_but_memory_errors_propagate():
    from lib_speedkit.compiled_module import apply_compiled_module

    def asserting(_forward):
        def compiled(*_args):
            raise AssertionError("expected size 4==4, stride 1==9 at dim=1")

        return compiled

    decoder = Decoder()
    z = torch.randn(1, 4, 8, 8)
    wrapper = apply_compiled_module(decoder, Compiler(asserting), "vae decoder")
    assert torch.equal(decoder(z), Decoder.forward(decoder, z)) and torch.equal(decoder(z), decoder.conv(z))
    (reason,) = wrapper.eager_calls
    assert "AssertionError: expected size" in reason and wrapper.eager_calls[reason] == 2

    def out_of_memory(_forward):
        def compiled(*_args):
            raise torch.OutOfMemoryError("CUDA out of memory")

        return compiled

    fresh = Decoder()
    apply_compiled_module(fresh, Compiler(out_of_memory), "vae decoder")
    with pytest.raises(torch.OutOfMemoryError):
        fresh(z)


def test_a_module_whose_forward_another_extension_replaced_is_refused():
    from lib_speedkit.compiled_module import apply_compiled_module
    from lib_speedkit.errors import SpeedkitError

    decoder = Decoder()
    decoder.forward = lambda z: z  # a tiled VAE's forward
    with pytest.raises(SpeedkitError, match="already replaced by another extension"):
        apply_compiled_module(decoder, Compiler(RecordingCompile()), "vae decoder")


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor's CPU code needs a C++ compiler")
def test_the_real_inductor_compiles_on_the_worker_and_once_per_weight_layout():
    """No stand-in: torch.compile (inductor's CPU backend here, triton on a GPU) on the worker
    thread, for each weight layout, within float rounding of the module's own forward."""
    from lib_speedkit.compiled_module import apply_compiled_module, remove_compiled_module

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.GroupNorm(2, 8)

        def forward(self, z):
            return torch.nn.functional.silu(self.norm(self.conv(z)))

    block, z, compiler = Block().eval(), torch.randn(1, 4, 8, 8), Compiler()
    untouched = Block()
    before = module_fingerprint(untouched)  # torch._dynamo's first compile patches nn.Module.__init__
    with torch.no_grad():
        expected = block(z)
        for layout in (torch.contiguous_format, torch.channels_last):
            block.to(memory_format=layout)
            wrapper = apply_compiled_module(block, compiler, "block")
            assert torch.allclose(block(z), expected, atol=1e-5)
            assert wrapper.compiled_calls == 1 and not wrapper.eager_calls, wrapper.eager_calls
            remove_compiled_module(wrapper)
    assert [entry.as_json()["shape"] for entry in compiler.compiles] == [[1, 4, 8, 8], [1, 4, 8, 8]]
    assert module_fingerprint(untouched) == before  # ... which no forward runs: graphs keep their key
