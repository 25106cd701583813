"""Where the GPU time of one SD1.5 UNet call goes, by kernel family (torch.profiler), and what an
fp16 GroupNorm (no float round trip) would change. GPU only.

  python benchmarks/profile_step.py [--sizes 512,1024] [--out profile_step.json]

For each size (batch 2 = cond + uncond, fp16 autocast, sdp attention, random re-randomised
weights): the profiled eager call's CUDA kernel time grouped into convolution/matmul, attention,
GroupNorm, dtype casts and copies, other elementwise; then the CUDA-graph call time (CUDA events,
median of 30) with ldm's GroupNorm32 (input cast to float and back) and with a GroupNorm that
takes the fp16 input directly (statistics still accumulated in float by the kernel), and the max
output difference between the two.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from unet_step import time_calls, unet_inputs, use_device_timestep_embedding

from lib_speedkit.apply import apply_plan
from lib_speedkit.bench.models import SD15_UNET, build_unet
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph
from lib_speedkit.plan import AttentionConfig, SpeedPlan

FAMILIES = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa|softmax", re.I)),
    ("GroupNorm", re.compile(r"group_?norm|GroupNorm", re.I)),
    ("casts and copies", re.compile(r"copy|cast|to_copy", re.I)),
    ("convolution / matmul", re.compile(r"gemm|conv|cutlass|xmma|cudnn|implicit|wgrad|dgrad|nhwc|sm\d\d_", re.I)),
)


def family(kernel_name: str) -> str:
    for name, pattern in FAMILIES:
        if pattern.search(kernel_name):
            return name
    return "other elementwise / reductions"


def kernel_breakdown(unet, args, kwargs) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        for _ in range(3):
            unet(*args, **kwargs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            unet(*args, **kwargs)
            torch.cuda.synchronize()
    totals, counts = defaultdict(float), defaultdict(int)
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if device_us <= 0 or event.key.startswith(("aten::", "cuda")) or event.key.startswith("Memcpy"):
            continue
        name = family(event.key)
        totals[name] += device_us / 1000
        counts[name] += event.count
    return {name: {"ms": round(totals[name], 3), "kernels": counts[name]} for name in totals}


def fp16_group_norm_forward(self, x):
    """GroupNorm on the input's own dtype, outside autocast (which would upcast it to float)."""
    with torch.autocast("cuda", enabled=False):
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return torch.nn.functional.group_norm(x, self.num_groups, weight, bias, self.eps)


def graphed_ms(unet, args, kwargs) -> tuple[dict, torch.Tensor]:
    cache = GraphCache()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16), apply_cuda_graph(unet, cache, "profile"):
        output = unet(*args, **kwargs).float()
        timing = time_calls(lambda: unet(*args, **kwargs), 30)
    cache.release()
    return timing, output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--out", default="profile_step.json")
    ns = parser.parse_args()
    use_device_timestep_embedding()
    from ldm.modules.diffusionmodules.util import GroupNorm32

    unet = build_unet(SD15_UNET).half().cuda()
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "date": time.strftime("%F %R")}
    with apply_plan(unet, SpeedPlan(AttentionConfig("sdp")), torch.float16):
        for size in (int(s) for s in ns.sizes.split(",")):
            args, kwargs = unet_inputs("sd15", 2, size, "cuda")
            row = {"kernels_eager": kernel_breakdown(unet, args, kwargs)}
            row["graph_groupnorm32"], reference = graphed_ms(unet, args, kwargs)
            original = GroupNorm32.forward
            GroupNorm32.forward = fp16_group_norm_forward
            try:
                row["kernels_eager_fp16_groupnorm"] = kernel_breakdown(unet, args, kwargs)
                row["graph_fp16_groupnorm"], output = graphed_ms(unet, args, kwargs)
            finally:
                GroupNorm32.forward = original
            row["fp16_groupnorm_max_abs_diff"] = (output - reference).abs().max().item()
            row["output_abs_max"] = reference.abs().max().item()
            result[f"{size}"] = row
            print(size, json.dumps(row, indent=1), flush=True)
    Path(ns.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
