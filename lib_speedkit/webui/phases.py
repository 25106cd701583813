"""Where a benchmarked generation's time goes outside sampling: the prompt's conditioning, the
VAE decode (the decoder itself, NaN checks and the copy to the CPU), the WebUI's memory cleanup
(`devices.torch_gc`, called several times per generation: it empties torch's cache, so the next
allocations ask the driver again) and Speedkit's own work (the record's `overhead_s`); the rest is
image conversion, infotext and scripts.

`timed_phases` is the bench's alone: it holds the queue lock, so timing the WebUI's functions for
the length of one generation cannot touch another one; each of its stretches synchronises the GPU
first and last, so work queued earlier is not billed to it. `speedkit_time` times Speedkit's own
hooks in every generation (the record's `overhead_s`) without synchronising: the host's time, while
the GPU work they queue (channels-last's copies) runs on beside the next Python.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from modules import devices, processing


def synchronize() -> None:
    """Wait for the GPU's queued work (no-op without CUDA)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextmanager
def speedkit_time(spent: dict[str, float], phase: str) -> Iterator[None]:
    """Add the host's seconds of Speedkit's own work in `phase` to `spent` (a record's
    `overhead_s`). No synchronising: waiting here for the GPU in every generation's hooks stalled
    the host for work that runs queued (the WebUI's before, channels-last's copies after)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - started


class PhaseClock:
    """Seconds per phase name, summed over the phase's calls (nested calls count once, outermost)."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self._depth = 0

    def timed(self, name: str, function: Callable) -> Callable:
        def timed_call(*args, **kwargs):
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            synchronize()
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                synchronize()
                self.seconds[name] += time.perf_counter() - started
                self._depth -= 1

        return timed_call

    def as_json(self, total: float, sampling: float, speedkit: float = 0.0) -> dict:
        """Rounded seconds per phase, with `speedkit` (its own work outside sampling: applying and
        restoring switches); `other` is what those and sampling leave of `total`."""
        phases = {name: round(seconds, 4) for name, seconds in sorted(self.seconds.items())}
        phases["speedkit"] = round(speedkit, 4)
        phases["other"] = round(max(0.0, total - sampling - speedkit - sum(self.seconds.values())), 4)
        return phases


@contextmanager
def timed_phases(p) -> Iterator[PhaseClock]:
    """Time `p`'s conditioning, the VAE decodes and the memory cleanups until the block ends."""
    clock = PhaseClock()
    originals = (processing.decode_latent_batch, devices.torch_gc, p.setup_conds)
    processing.decode_latent_batch = clock.timed("vae_decode", originals[0])
    devices.torch_gc = clock.timed("torch_gc", originals[1])
    p.setup_conds = clock.timed("conditioning", originals[2])
    try:
        yield clock
    finally:
        processing.decode_latent_batch, devices.torch_gc = originals[0], originals[1]
        del p.setup_conds
