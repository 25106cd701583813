"""Benchmark-only WebUI extension (benchmarks/webui_workloads.py links it in; users never install it).

It profiles Speedkit's own work in a generation: while on, each of Speedkit's generation hooks
(lib_speedkit.webui.hooks: activate, before/after each sampling pass, finish) runs under one
cProfile profiler, so the harness can see where the record's `overhead_s` goes. The hooks time
themselves with a GPU synchronise at both ends, so GPU work they queue shows as
`torch.cuda.synchronize`.

  POST /speedkit-bench/profile {"on": true}   -> {"on": true}
  POST /speedkit-bench/profile {"on": false}  -> {"on": false, "stats": "<pstats text>"}
"""

import cProfile
import functools
import io
import pstats
import sys
from typing import ClassVar

from modules import script_callbacks

HOOKS = ("activate_generation", "before_hires", "before_sampling", "after_sampling", "finish_generation")
TOP = 60


class HookProfile:
    profiler = None
    originals: ClassVar[dict] = {}

    @classmethod
    def start(cls) -> None:
        cls.stop()
        hooks = sys.modules["lib_speedkit.webui.hooks"]
        cls.profiler = cProfile.Profile()
        for name in HOOKS:
            cls.originals[name] = getattr(hooks, name)
            setattr(hooks, name, cls.profiled(cls.originals[name]))

    @classmethod
    def profiled(cls, hook):
        @functools.wraps(hook)
        def call(*args, **kwargs):
            cls.profiler.enable()
            try:
                return hook(*args, **kwargs)
            finally:
                cls.profiler.disable()

        return call

    @classmethod
    def stop(cls) -> str:
        if cls.profiler is None:
            return ""
        hooks = sys.modules["lib_speedkit.webui.hooks"]
        for name, hook in cls.originals.items():
            setattr(hooks, name, hook)
        cls.originals = {}
        text = io.StringIO()
        stats = pstats.Stats(cls.profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(TOP)
        stats.sort_stats("tottime").print_stats(TOP // 2)
        cls.profiler = None
        return text.getvalue()


def on_app_started(_demo, app) -> None:
    @app.post("/speedkit-bench/profile")
    def profile(body: dict):
        if body.get("on"):
            HookProfile.start()
            return {"on": True}
        return {"on": False, "stats": HookProfile.stop()}


script_callbacks.on_app_started(on_app_started)
