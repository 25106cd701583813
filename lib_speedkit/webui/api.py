"""Speedkit's REST routes, each behind the WebUI's credentials (webui/access.py):

GET  /speedkit/v1/status  the attention backend, what is applied now, the last generation
POST /speedkit/v1/bench   the benchmark (webui/bench.py; needs --api)
POST /speedkit/v1/slim    checkpoint slimming (webui/slim.py; needs --api)
POST /speedkit/v1/precompile  the compiled UNet for chosen sizes (webui/precompile.py; needs --api)
"""

from __future__ import annotations

from modules import shared

from ..cuda_graph import graphed_forward_of
from ..deepcache import deepcache_forward_of
from ..memory_format import is_channels_last
from ..tome import has_tome_patch
from . import attention, bench, compiled, fast_path, hooks, precompile, slim
from .access import add_route


def unet_memory_format() -> str:
    model = shared.sd_model
    if model is None:
        return "n/a (no model loaded)"
    return "channels_last" if is_channels_last(model.model.diffusion_model) else "contiguous"


def status() -> dict:
    """GET /speedkit/v1/status."""
    model = shared.sd_model
    unet = model.model.diffusion_model if model is not None else None
    last = hooks.last_record()
    running = hooks.innermost()
    return {
        "attention": {
            "current": attention.current_backend_title(),
            "configured": shared.opts.cross_attention_optimization,
            "unavailable": attention.unavailable_backends(),
        },
        "unet_memory_format": unet_memory_format(),
        "tome_active": bool(unet is not None and has_tome_patch(unet)),
        "cfg_wrapper_active": bool(running is not None and running.guidance is not None),
        "cuda_graph": {
            "active": bool(unet is not None and graphed_unet(unet)),
            "cached_graphs": len(fast_path.GRAPHS),
            "cached_mb": round(fast_path.GRAPHS.nbytes / 2**20, 1),
            "budget_mb": None if fast_path.GRAPHS.max_bytes is None else fast_path.GRAPHS.max_bytes // 2**20,
            "totals": fast_path.GRAPHS.stats.as_json(),
        },
        "compiled_unet": compiled.status(fast_path.GRAPHS),
        "lean_step_active": lean_step_active(),
        "deepcache_active": bool(unet is not None and deepcache_forward_of(unet) is not None),
        "generation_active": hooks.active(),
        "last_generation": last.as_json() if last is not None else None,
        "forge": attention.is_forge(),
    }


def graphed_unet(unet) -> bool:
    """The UNet replays from graphs now (its own forward, or DeepCache's steps on top of it)."""
    cached = deepcache_forward_of(unet)
    return graphed_forward_of(unet) is not None or (cached is not None and cached.graphed is not None)


def lean_step_active() -> bool:
    import torch

    networks = fast_path.lora_builtin()
    return networks is not None and torch.nn.Linear.forward is not networks.network_Linear_forward


def add_routes(_demo, app) -> None:
    """on_app_started: every route behind the WebUI's credentials; the heavy ones need --api."""
    add_route(app, "/speedkit/v1/status", status, ["GET"], needs_api=False)
    add_route(app, "/speedkit/v1/bench", bench.bench_endpoint, ["POST"], needs_api=True)
    add_route(app, "/speedkit/v1/slim", slim.slim_endpoint, ["POST"], needs_api=True)
    add_route(app, "/speedkit/v1/precompile", precompile.precompile_endpoint, ["POST"], needs_api=True)
