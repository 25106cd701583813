"""Benchmark-only WebUI extension (benchmarks/webui_workloads.py links it in; users never install it).

It profiles a generation's host time with cProfile, in one of two places:

  "hooks"    Speedkit's own generation hooks (lib_speedkit.webui.hooks: activate, before/after
             each sampling pass, finish): where the record's `overhead_s` goes (host time: the
             hooks do not wait for the GPU work they queue).
  "txt2img"  what /sdapi/v1/txt2img runs: `process_images` (the whole generation) and the
             answer's PNG + base64 encoding (`encode_pil_to_base64`): where a hires-fix request's
             time goes outside the GPU's work. GPU waits show where the host blocks on the GPU.

  POST /speedkit-bench/profile {"on": true, "target": "hooks" | "txt2img"} -> {"on": true}
  POST /speedkit-bench/profile {"on": false}  -> {"on": false, "stats": "<pstats text>"}
"""

import cProfile
import functools
import io
import pstats
import sys
from typing import ClassVar

from modules import script_callbacks

TARGETS = {
    "hooks": (
        "lib_speedkit.webui.hooks",
        ("activate_generation", "before_hires", "before_sampling", "after_sampling", "finish_generation"),
    ),
    "txt2img": ("modules.api.api", ("process_images", "encode_pil_to_base64")),
}
TOP = 60


class Profile:
    profiler = None
    module = None
    originals: ClassVar[dict] = {}

    @classmethod
    def start(cls, target: str) -> None:
        cls.stop()
        module_name, names = TARGETS[target]
        cls.module = sys.modules[module_name]
        cls.profiler = cProfile.Profile()
        for name in names:
            cls.originals[name] = getattr(cls.module, name)
            setattr(cls.module, name, cls.profiled(cls.originals[name]))

    @classmethod
    def profiled(cls, function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            cls.profiler.enable()
            try:
                return function(*args, **kwargs)
            finally:
                cls.profiler.disable()

        return call

    @classmethod
    def stop(cls) -> str:
        if cls.profiler is None:
            return ""
        for name, function in cls.originals.items():
            setattr(cls.module, name, function)
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
            Profile.start(body.get("target", "hooks"))
            return {"on": True}
        return {"on": False, "stats": Profile.stop()}


script_callbacks.on_app_started(on_app_started)
