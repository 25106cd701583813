"""The real capturer's memory-pool bookkeeping, with torch.cuda's surface played on the CPU.

What a capture does on the GPU (kernels, numerics) is checked on the GPU by tests/gpu/; these
tests pin down which pool each capture asks the allocator for, which the CPU can check.
"""

import contextlib

import pytest
import torch

from lib_speedkit import cuda_graph
from lib_speedkit.cuda_graph import CudaCapturer


class FakeCuda:
    """The parts of torch.cuda that CudaCapturer touches; records the pool of every capture."""

    def __init__(self, monkeypatch):
        self.handles = 0
        self.pools = []
        for name, value in {
            "graph_pool_handle": self.graph_pool_handle,
            "memory_reserved": lambda: 0,
            "Stream": lambda: _Stream(),
            "current_stream": lambda: _Stream(),
            "stream": lambda stream: contextlib.nullcontext(),
            "CUDAGraph": lambda: object(),
            "graph": self.graph,
        }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        monkeypatch.setattr(cuda_graph, "_autocast_without_cache", contextlib.nullcontext)

    def graph_pool_handle(self):
        self.handles += 1
        return ("pool", self.handles)

    def graph(self, graph, pool=None, capture_error_mode=None):
        self.pools.append(pool)
        return contextlib.nullcontext()


class _Stream:
    def wait_stream(self, other):
        pass


def failing_forward(x):
    raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")


def test_graphs_share_one_pool(monkeypatch):
    fake = FakeCuda(monkeypatch)
    capturer = CudaCapturer(warmup_calls=0)
    capturer.capture(torch.neg, (torch.ones(2),), {})
    capturer.capture(torch.neg, (torch.ones(3),), {})
    assert fake.pools == [("pool", 1), ("pool", 1)]


def test_a_failed_capture_never_hands_its_pool_to_the_next_capture(monkeypatch):
    # On a GPU, reusing that pool once the failed graph is collected fails the allocator's
    # "use_count > 0" assertion: every later capture of the session would fail.
    fake = FakeCuda(monkeypatch)
    capturer = CudaCapturer(warmup_calls=0)
    with pytest.raises(RuntimeError, match="Cannot copy"):
        capturer.capture(failing_forward, (torch.ones(2),), {})
    capturer.capture(torch.neg, (torch.ones(2),), {})
    assert fake.pools == [("pool", 1), ("pool", 2)]


def test_release_starts_a_new_pool_for_the_next_capture(monkeypatch):
    fake = FakeCuda(monkeypatch)
    capturer = CudaCapturer(warmup_calls=0)
    capturer.capture(torch.neg, (torch.ones(2),), {})
    capturer.release()
    capturer.capture(torch.neg, (torch.ones(2),), {})
    assert fake.pools == [("pool", 1), ("pool", 2)]
