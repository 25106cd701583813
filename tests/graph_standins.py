"""CUDA graphs played on the CPU, for the tests (tier 1, and the WebUI in tier 2 through the test
fault extension): `StandInCapturer` captures a call as a `FrozenCall`.

A capture freezes the call: torch.jit.trace records its Python control flow and the Python state
of that moment, as a CUDA capture freezes the kernels; a replay runs only that recording on the
static input buffers and writes the static output buffer. A graph key that misses some Python
state then shows as a stale replay, as it would on a GPU.
"""

from __future__ import annotations

import warnings

import torch


class FrozenCall:
    """What a CUDA graph is to a call, on the CPU: the call is recorded once (torch.jit.trace
    freezes its Python control flow and the Python state of that moment, as a capture freezes
    the kernels) and a replay runs only that recording on the static input buffers, writing the
    static output buffer. A key that misses some Python state then shows as a stale replay."""

    def __init__(self, forward, args, kwargs):
        self.static_args, self.static_kwargs = args, kwargs
        names = sorted(kwargs)
        self.inputs = [*(a for a in args if isinstance(a, torch.Tensor))]
        self.inputs += [kwargs[n] for n in names if isinstance(kwargs[n], torch.Tensor)]

        def run(*tensors):
            values = iter(tensors)
            call_args = [next(values) if isinstance(a, torch.Tensor) else a for a in args]
            call_kwargs = {n: next(values) if isinstance(kwargs[n], torch.Tensor) else kwargs[n] for n in names}
            return forward(*call_args, **call_kwargs)

        # Weights become constants of the recording that alias their storage (as a graph reads
        # weights by address); jit.trace refuses to do that for tensors that require grad.
        target = getattr(forward, "original", forward)  # a compiled forward keeps its original
        module = getattr(target, "__self__", None) or getattr(target, "unet", None)  # DeepCache's steps hold it
        params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarning: Python values are frozen, which is the point
            try:
                for param in params:
                    param.requires_grad_(False)
                self.traced = torch.jit.trace(run, tuple(self.inputs), check_trace=False, strict=False)
            finally:
                for param in params:
                    param.requires_grad_(True)
        self.output = self.traced(*self.inputs)
        self.replays = 0
        outputs = self.output if isinstance(self.output, tuple) else (self.output,)
        self.nbytes = sum(t.numel() * t.element_size() for t in [*self.inputs, *outputs])

    def replay(self):
        self.replays += 1
        fresh = self.traced(*self.inputs)
        if isinstance(self.output, tuple):
            for static, value in zip(self.output, fresh, strict=True):
                static.copy_(value)
        else:
            self.output.copy_(fresh)


class StandInCapturer:
    """Captures on the CPU as FrozenCalls. `fail_with`: the error the first `failures` captures
    raise (all of them by default); `capturing()` is True while a capture runs, as on a GPU."""

    device_type = "cpu"

    def __init__(self, fail_with: BaseException | None = None, failures: int | None = None):
        self.fail_with = fail_with
        self.failures = failures
        self.attempts = 0
        self.captured: list[FrozenCall] = []
        self.released = 0
        self._capturing = False

    def capture(self, forward, args, kwargs):
        self.attempts += 1
        if self.fail_with is not None and (self.failures is None or self.attempts <= self.failures):
            raise self.fail_with
        self._capturing = True
        try:
            graph = FrozenCall(forward, args, kwargs)
        finally:
            self._capturing = False
        self.captured.append(graph)
        return graph

    def capturing(self):
        return self._capturing

    def release(self):
        self.released += 1
