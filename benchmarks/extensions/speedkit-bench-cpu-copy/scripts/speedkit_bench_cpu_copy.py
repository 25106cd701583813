"""Benchmark-only WebUI extension (benchmarks/webui_workloads.py links it in; users never install it).

It stands for a UNet-hooking extension that copies from the CPU inside the UNet, as sgm's timestep
embedding did: while on, a forward pre-hook on the UNet's first input block adds a zero that it
copies from the CPU at every call. The values stay bit-identical (x + 0), but a CUDA graph capture
of the UNet fails, so the harness can measure what a failed capture costs against stock.

  POST /speedkit-bench/cpu-copy {"on": true | false}  -> {"on": ...}
"""

import torch
from modules import script_callbacks, shared


class CpuCopyHook:
    handle = None

    @classmethod
    def set(cls, on: bool) -> bool:
        if cls.handle is not None:
            cls.handle.remove()
            cls.handle = None
        if on:
            block = shared.sd_model.model.diffusion_model.input_blocks[0]
            cls.handle = block.register_forward_pre_hook(cls.add_zero_from_the_cpu)
        return cls.handle is not None

    @staticmethod
    def add_zero_from_the_cpu(module, args):
        x = args[0]
        return (x + torch.zeros((), dtype=x.dtype).to(x.device), *args[1:])


def on_app_started(_demo, app) -> None:
    @app.post("/speedkit-bench/cpu-copy")
    def cpu_copy(body: dict):
        return {"on": CpuCopyHook.set(bool(body.get("on")))}


script_callbacks.on_app_started(on_app_started)
