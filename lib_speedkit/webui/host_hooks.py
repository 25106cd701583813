"""What the WebUI tells the engine for one generation (`HostHooks`, appliers.py): attention by the
host's titles, the cutoff's guard and sigma threshold on `p`, the graph cache with its blockers
and key, the Lora built-in's wrappers for the lean step, DeepCache's blocker and step clock, and
the compiled UNet's blocker and compiler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modules import shared

from ..appliers import HostHooks
from . import attention, compiled, cutoff, deepcache, fast_path
from .hypertile import is_hypertile_forward

if TYPE_CHECKING:
    from .generation import Generation


def generation_hooks(generation: Generation) -> HostHooks:
    p = generation.p
    return HostHooks(
        backend_title=attention.resolve_backend,
        current_title=attention.current_backend_title,
        switch_title=attention.switch_title,
        check_backend=attention.check_backend_runnable,
        cutoff_blocker=lambda config: cutoff.cutoff_guard(p, config),
        host_cutoff=lambda config: cutoff.host_sigma_threshold(p, config),
        graphs=fast_path.GRAPHS,
        graph_blocker=lambda: fast_path.graph_blocker(
            shared.sd_model.model.diffusion_model, generation.current_tome(), generation.pass_networks
        ),
        graph_key=fast_path.graph_context_key,
        forward_keyed=is_hypertile_forward,
        lean_blocker=lambda: generation.pass_networks.lean_blocker(),
        wrapped_forwards=lambda: generation.pass_networks.wrapped_forwards(),
        graph_prepare=fast_path.graphable_sgm_unet,
        deepcache_blocker=lambda: deepcache.deepcache_blocker(shared.sd_model.model.diffusion_model),
        deepcache_clock=generation.steps,
        compile_blocker=compiled.compile_blocker,
        compiler=compiled.COMPILER,
    )
