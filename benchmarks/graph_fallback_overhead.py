"""What a failed capture costs per UNet call once the pass has stepped aside (issue #12: ≤ 1 %).

  python benchmarks/graph_fallback_overhead.py [--calls 200000] [--repeats 7] [--steps 28]

After a capture fails, the graphed forward runs every later call of the pass eagerly with no key
work: one attribute test and one counter increment. Its cost is host time per call and does not
depend on the UNet, so it is measured around a module that does no work (the bare call's time is
subtracted). Once per pass the fast path computes the pass's graph key, whose costly part is the
UNet's fingerprint: timed on an SD1.5-size ldm UNet. Both are host time, measured on whatever
machine runs this; the share of a generation is (steps × per-call overhead + one key) divided by
steps × the step time of stock A1111 at the speeds in docs/BENCHMARKS.md. Not counted: the first
failed capture of a key (warm-up calls and the attempt, once per key until the model changes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_speedkit.bench.models import SD15_UNET, build_unet
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph, graphed_forward_of, module_fingerprint

# The fastest stock A1111 run seen, SD1.5 512² on an H200 (docs/BENCHMARKS.md, 2026-12-02; one
# UNet call per step, cond and uncond batched): where a per-pass cost weighs most. SDXL's steps
# take about three times as long.
STOCK_ITS = 33.9


class FailingCapturer:
    """Every capture fails, as a hook copying from the CPU makes it on a GPU."""

    device_type = "cpu"

    def capture(self, forward, args, kwargs):
        raise RuntimeError("Cannot copy between CPU and CUDA tensors during CUDA graph capture")

    def capturing(self) -> bool:
        return False

    def release(self) -> None:
        pass


class NoWork(torch.nn.Module):
    def forward(self, x):
        return x


def seconds_per_call(module: torch.nn.Module, x: torch.Tensor, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        module(x)
    return (time.perf_counter() - started) / calls


def fingerprint_seconds(repeats: int) -> float:
    unet = build_unet(SD15_UNET)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        module_fingerprint(unet)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(calls: int, repeats: int, steps: int) -> dict:
    x = torch.zeros(1)
    bare = NoWork()
    stepped_aside = NoWork()
    apply_cuda_graph(stepped_aside, GraphCache(FailingCapturer()), "pass")
    stepped_aside(x)  # the failed capture: the pass steps aside from here on
    assert graphed_forward_of(stepped_aside).gave_up is not None
    bare_times, aside_times = [], []
    for _ in range(repeats):  # interleaved, medians
        bare_times.append(seconds_per_call(bare, x, calls))
        aside_times.append(seconds_per_call(stepped_aside, x, calls))
    overhead = statistics.median(aside_times) - statistics.median(bare_times)
    key = fingerprint_seconds(repeats)
    return {
        "bare_call_us": statistics.median(bare_times) * 1e6,
        "stepped_aside_call_us": statistics.median(aside_times) * 1e6,
        "overhead_us": overhead * 1e6,
        "sd15_fingerprint_ms": key * 1e3,
        "share_of_a_stock_generation": (steps * overhead + key) * STOCK_ITS / steps,
    }


@torch.no_grad()  # as the WebUI samples: a graph is only tried without gradients
def run(ns) -> dict:
    return measure(ns.calls, ns.repeats, ns.steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=28)
    ns = parser.parse_args()
    result = run(ns)
    print(f"bare call {result['bare_call_us']:.2f} µs, after a failed capture {result['stepped_aside_call_us']:.2f} µs")
    print(f"overhead per UNet call {result['overhead_us']:.2f} µs")
    print(f"the pass's graph key (SD1.5 UNet fingerprint) {result['sd15_fingerprint_ms']:.2f} ms")
    share = result["share_of_a_stock_generation"]
    print(f"SD1.5 512² at {STOCK_ITS} it/s, {ns.steps} steps: {100 * share:.3f} % of a stock generation's sampling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
