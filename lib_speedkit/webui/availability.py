"""What can run in this WebUI: the switches the accordion greys out and speed modes leave out,
with the reason, and the check that refuses a plan before its generation starts.

Not a reason: no GPU. The CUDA graph (and the compiled UNet on it) then steps aside for each pass
with a note, as it does for everything else decided per pass.
"""

from __future__ import annotations

from ..compiled import compile_support
from ..cuda_graph import MIN_TORCH, graph_support
from ..errors import SpeedkitError
from ..plan import SpeedPlan
from . import attention
from .attention import FORGE_NOTE, is_forge

GRAPH_SWITCH = "cuda_graph"
COMPILE_SWITCH = "compile_unet"
"""Keys of the CUDA-graph and compiled-UNet switches in `unavailable_switches()` (beside the
backend names)."""


def unavailable_switches() -> dict[str, str]:
    """Backends this WebUI cannot run, the CUDA graph on a torch too old for it, the compiled UNet
    without what it needs (torch, triton, the GPU), the cutoff on Forge: name -> reason."""
    reasons = attention.unavailable_backends()
    torch_reason = graph_support("cpu")
    if torch_reason is not None:
        reasons[GRAPH_SWITCH] = torch_reason
    compile_reason = compile_support()
    if compile_reason is not None:
        reasons[COMPILE_SWITCH] = compile_reason
    if is_forge():
        reasons["cutoff_mode"] = FORGE_NOTE
    return reasons


def check_plan_can_run(plan: SpeedPlan) -> None:
    """Refuse, before a generation starts, what cannot run in this WebUI."""
    if is_forge() and (plan.attention.enabled or plan.cutoff.enabled):
        raise SpeedkitError(FORGE_NOTE)
    if plan.attention.enabled:
        attention.resolve_backend(plan.attention.backend)
        attention.check_backend_runnable(plan.attention.backend)
    if plan.cuda_graph.enabled and graph_support("cpu") is not None:
        need = ".".join(map(str, MIN_TORCH))
        raise SpeedkitError(f"cuda_graph: unavailable here: {graph_support('cpu')} (needs torch >= {need})")
    compile_reason = compile_support() if plan.compile.enabled else None
    if compile_reason is not None:
        raise SpeedkitError(f"compile_unet: unavailable here: {compile_reason}")
