"""The adapter: the only lib_speedkit module that imports the AUTOMATIC1111 WebUI (`modules.*`).

It applies a SpeedPlan to one generation with the host's own mechanisms and restores everything
on every path:

  attention      `sd_hijack.model_hijack.apply_optimizations(title)` (the library's SDPA kernel
                 variants are registered with the host as optimizers), restored by title.
  sigma cutoff   `p.s_min_uncond` + `s_min_uncond_all` (the host's NGMS, on every step).
  fraction /     a class-level wrapper on `CFGDenoiser.forward` (via `modules.patches`) that makes
  adaptive       the host skip the uncond pass from the cutoff on.
  ToMe           the library's tomesd patch on the UNet; the host's own ToMe options are forced
                 to 0 for the generation (override_settings), so the two never stack.
  channels-last  the library's apply_channels_last on `sd_model.model.diffusion_model`.
  CUDA graph     the library's graph cache on the UNet's forward, (re)applied before every
                 sampling pass with a key of what the graph cannot see; eager, with a note,
                 where a graph could be wrong (networks loaded, random ToMe, no CUDA, ...).
  lean step      the Lora built-in's per-layer forward wrappers swapped for the originals it
                 keeps (`modules.patches.original`) while no network is loaded.

Lifecycle of one generation (hooks in scripts/speedkit.py):
  before_process -> prepare()   build and check the plan, set host overrides
  process        -> activate()  apply the switches, write infotext
  before_hr      -> before_hires()  ToMe ratio of the hires pass
  process_before_every_sampling -> before_sampling()  CUDA graph and lean step for this pass
  (finally)      -> finish()    restore; called from a wrapper around
                                `processing.process_images_inner`, so it runs after success,
                                exceptions (OOM) and interrupts; also from postprocess and on
                                script unload (idempotent).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from dataclasses import dataclass, field, replace

import torch
from modules import devices, patches, processing, script_callbacks, sd_hijack, sd_samplers_cfg_denoiser, shared

from .. import attention as attention_lib
from ..cuda_graph import GraphCache, apply_cuda_graph, graphed_forward_of, module_fingerprint
from ..errors import BackendUnavailable, SpeedkitError
from ..guidance import CutoffPolicy, noise_prediction_similarity
from ..memory_format import apply_channels_last, is_channels_last
from ..plan import (
    ATTENTION_CHOICES,
    KEEP,
    KEY_CUDA_GRAPH,
    KEY_LEAN_STEP,
    GuidanceCutoffConfig,
    SpeedPlan,
    TokenMergingConfig,
    canonical_backend_name,
    format_infotext,
)
from ..script_args import plan_from_args
from ..tome import apply_tome, has_tome_patch, tome_settings_key
from ..undo import Undo, run_in_reverse

PATCH_KEY = "sd-webui-speedkit"
SCRIPT_TITLE = "Speedkit"
KERNEL_VARIANTS = ("sdp-flash", "sdp-efficient", "sdp-cudnn", "sdp-math")
"""Library backends the host lacks; registered with it as optimizers (Settings -> Optimizations)."""
TIMESTEP_SAMPLERS = ("DDIM", "DDIM CFG++", "PLMS", "UniPC")
"""Samplers whose denoiser sees timesteps (0-999), not sigmas: a sigma cutoff means nothing there."""
HOST_TOME_OPTIONS = ("token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr")
NOTE_KEY = "Speedkit note"


class GenerationRefused(SpeedkitError):
    """Speedkit could not apply the requested plan, so the generation does not run."""


def is_forge() -> bool:
    """True inside stable-diffusion-webui-forge, where attention cannot be switched per generation."""
    return importlib.util.find_spec("modules_forge") is not None


FORGE_NOTE = (
    "Forge detected: it picks the attention backend at start-up and computes guidance in its own "
    "sampling function, so Speedkit's attention and guidance-cutoff choices are disabled here."
)


# --------------------------------------------------------------------------- attention via the host


def host_backend_titles() -> dict[str, str]:
    """Canonical backend name -> the host's optimizer title, for every backend the host offers now."""
    from modules import shared_items

    titles = shared_items.cross_attention_optimizations()
    return {canonical_backend_name(title): title for title in titles if title != "Automatic"}


def unet_compute_dtype() -> torch.dtype:
    """The dtype the UNet's attention computes in (fp32 with --no-half or the upcast option)."""
    if shared.opts.upcast_attn:
        return torch.float32
    return devices.dtype_unet


def unavailable_backends() -> dict[str, str]:
    """Backend name -> why it cannot be used in this WebUI now (for every name the plan allows)."""
    if is_forge():
        return {name: FORGE_NOTE for name in ATTENTION_CHOICES if name != KEEP}
    offered = host_backend_titles()
    reasons = {}
    for name in ATTENTION_CHOICES:
        if name == KEEP or name in offered:
            continue
        reasons[name] = _unavailable_reason(name)
    return reasons


def _unavailable_reason(name: str) -> str:
    if name in KERNEL_VARIANTS:
        reason = attention_lib.BACKENDS[name].is_available(shared.device, unet_compute_dtype()).reason
        return reason or "not registered with the WebUI"
    if name == "xformers":
        return "the WebUI offers xformers only when started with --xformers (and a supported NVIDIA GPU)"
    if name == "v1":
        return "the WebUI does not list 'V1 - original v1' here"
    return "the WebUI does not offer this backend here"


def backend_choices() -> list[str]:
    """Dropdown values: keep, then every backend name (unavailable ones are marked by the UI)."""
    return list(ATTENTION_CHOICES)


def make_kernel_optimizers() -> list:
    """SdOptimization objects for the library's SDPA kernel variants (for on_list_optimizers)."""
    import ldm.modules.attention
    import ldm.modules.diffusionmodules.model
    import sgm.modules.attention
    import sgm.modules.diffusionmodules.model
    from modules import sd_hijack_optimizations
    from modules.hypernetworks import hypernetwork

    def hypernetwork_context(context):
        return hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)

    class SpeedkitKernelOptimization(sd_hijack_optimizations.SdOptimization):
        priority = -1  # never picked by "Automatic"

        def __init__(self, backend: attention_lib.AttentionBackend):
            self.backend = backend
            self.name = backend.name
            self.label = f"{backend.summary} (Speedkit)"

        def is_available(self):
            return bool(self.backend.is_available(shared.device, unet_compute_dtype()))

        def apply(self):
            forward = self.backend.module_forward(hypernetwork_context, lambda: shared.opts.upcast_attn)
            ldm.modules.attention.CrossAttention.forward = forward
            sgm.modules.attention.CrossAttention.forward = forward
            # The VAE's attention blocks use the host's SDPA forward.
            ldm.modules.diffusionmodules.model.AttnBlock.forward = sd_hijack_optimizations.sdp_attnblock_forward
            sgm.modules.diffusionmodules.model.AttnBlock.forward = sd_hijack_optimizations.sdp_attnblock_forward

    return [SpeedkitKernelOptimization(attention_lib.BACKENDS[name]) for name in KERNEL_VARIANTS]


def current_backend_title() -> str:
    """Title of the host's attention optimizer now ("None" when disabled)."""
    optimizer = sd_hijack.current_optimizer
    return optimizer.title() if optimizer is not None else "None"


def resolve_backend(name: str) -> str:
    """The host title for backend `name`, or BackendUnavailable with the reason."""
    titles = host_backend_titles()
    if name not in titles:
        raise BackendUnavailable(name, unavailable_backends().get(name, "the WebUI does not offer it"))
    return titles[name]


def check_backend_runnable(name: str) -> None:
    """For a library kernel variant: refuse unless it runs for the loaded UNet's head sizes."""
    if name in KERNEL_VARIANTS and shared.sd_model is not None:
        attention_lib.BACKENDS[name].require_runnable(shared.sd_model.model.diffusion_model, unet_compute_dtype())


def switch_attention(name: str) -> Undo:
    """Switch the host's attention backend for one generation; the undo switches back by title."""
    if name == KEEP:
        return Undo.nothing("attention keep")
    title = resolve_backend(name)
    check_backend_runnable(name)
    previous = current_backend_title()
    if previous == title:
        return Undo.nothing("attention unchanged")
    sd_hijack.model_hijack.apply_optimizations(title)
    if current_backend_title() != title:
        sd_hijack.model_hijack.apply_optimizations(previous)
        raise BackendUnavailable(name, "the WebUI failed to apply it (see the console)")
    return Undo(lambda: sd_hijack.model_hijack.apply_optimizations(previous), f"attention {name}")


# --------------------------------------------------------------------------- one generation


@dataclass
class GenerationRecord:
    """What the status endpoint reports about a generation (`enabled` False: Speedkit was off and
    touched nothing, so nothing was counted)."""

    enabled: bool = True
    requested: dict[str, str] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: str | None = None
    unet_calls_with_uncond: int = 0
    unet_calls_without_uncond: int = 0
    cuda_graph: dict | None = None  # replays, captures and eager calls by reason, this generation
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def as_json(self) -> dict:
        return {
            "enabled": self.enabled,
            "requested": self.requested,
            "applied": self.applied,
            "notes": self.notes,
            "refused": self.refused,
            "unet_calls": self._unet_calls(),
            "cuda_graph": self.cuda_graph,
            "started": self.started,
            "finished": self.finished,
        }

    def _unet_calls(self) -> dict | None:
        if not self.enabled:
            return None
        return {"with_uncond": self.unet_calls_with_uncond, "without_uncond": self.unet_calls_without_uncond}


class Generation:
    """Speedkit's state for one `process_images` call."""

    def __init__(self, p, plan: SpeedPlan):
        self.p = p
        self.plan = plan
        self.record = GenerationRecord(requested=format_infotext(plan))
        self.undos: list[Undo] = []
        self.tome_undo: Undo | None = None
        self.tome: TokenMergingConfig | None = None  # the ToMe settings applied to this image
        self.policy: CutoffPolicy | None = None
        self.similarities: list[float] = []
        self.unet_rows = 0
        self.rows_before_call = 0
        self.current_x: torch.Tensor | None = None
        self.current_sigma: torch.Tensor | None = None
        self.graph_undo: Undo | None = None
        self.graph_stats_before: dict | None = None
        self.lean_undo: Undo | None = None
        self.activated = False
        self.used_keys: set[str] = set()

    # -- before_process: p fields and overrides, applied and restored by the host
    def prepare(self) -> None:
        if self.plan.tome.enabled:
            for option in HOST_TOME_OPTIONS:
                self.p.override_settings[option] = 0.0
            self.p.token_merging_ratio = 0.0
            self.p.token_merging_ratio_hr = 0.0

    # -- process: apply the switches
    def activate(self) -> None:
        try:
            applied = self._apply_all()
        except SpeedkitError as error:
            self._undo_all()
            self.refuse(str(error))
            return
        self.record.applied = format_infotext(applied)
        for key in PASS_LEVEL_KEYS:  # written when a sampling pass uses them (before_sampling)
            self.record.applied.pop(key, None)
        self.activated = True
        self.p.extra_generation_params.update(self.record.applied)
        if self.record.notes:
            self.p.extra_generation_params[NOTE_KEY] = "; ".join(self.record.notes)

    def _apply_all(self) -> SpeedPlan:
        check_plan_can_run(self.plan)
        unet = shared.sd_model.model.diffusion_model
        self.undos.append(self._count_unet_rows(unet))
        self.undos.append(apply_channels_last(unet, self.plan.channels_last.enabled))
        self.undos.append(switch_attention(self.plan.attention.backend))
        self.tome = self._tome_for_this_image(self.plan.tome)
        self.tome_undo = apply_tome(unet, self.tome)
        cutoff = self._apply_cutoff(self.plan.cutoff)
        return replace(self.plan, tome=self.tome, cutoff=cutoff)

    def _count_unet_rows(self, unet: torch.nn.Module) -> Undo:
        def count(_module, args):
            self.unet_rows += args[0].shape[0]

        return Undo(unet.register_forward_pre_hook(count).remove, "unet call counter")

    def _tome_for_this_image(self, tome: TokenMergingConfig) -> TokenMergingConfig:
        if tome.use_rand and tome.seed is None:
            tome = replace(tome, seed=int(self.p.all_seeds[0]) % 2**63)
        if tome.hr_ratio and not getattr(self.p, "enable_hr", False):
            tome = replace(tome, hr_ratio=0.0)  # no hires pass: do not claim a hires ratio
        return tome

    def _apply_cutoff(self, cutoff: GuidanceCutoffConfig) -> GuidanceCutoffConfig:
        if not cutoff.enabled:
            return cutoff
        reason = cutoff_guard(self.p, cutoff)
        if reason:
            self.note(f"guidance cutoff skipped: {reason}")
            return GuidanceCutoffConfig()
        if cutoff.mode == "sigma":
            self.undos.append(self._host_sigma_cutoff(cutoff.value))
        else:
            self.policy = CutoffPolicy(cutoff)
        return cutoff

    def _host_sigma_cutoff(self, sigma: float) -> Undo:
        previous_sigma = self.p.s_min_uncond
        self.p.s_min_uncond = sigma
        restore_option = set_option_temporarily("s_min_uncond_all", True)

        def restore() -> None:
            self.p.s_min_uncond = previous_sigma
            restore_option()

        return Undo(restore, "sigma cutoff")

    # -- before_hr: the hires pass may merge at another ratio
    def before_hires(self) -> None:
        tome = self.tome
        if self.record.refused or tome is None or not tome.enabled or not tome.hr_ratio:
            return
        try:
            self.tome_undo = apply_tome(shared.sd_model.model.diffusion_model, tome.for_hires_pass())
        except SpeedkitError as error:
            self.note(f"hires ToMe not applied: {error}")

    # -- process_before_every_sampling: the fast path and the lean step for this sampling pass
    def before_sampling(self) -> None:
        """Decide, for the pass about to run (first pass or hires), whether the UNet may be
        replayed from CUDA graphs and the Lora wrappers bypassed; networks are loaded by now."""
        if self.record.refused or not (self.plan.lean_step.enabled or self.plan.cuda_graph.enabled):
            return
        networks = lora_builtin()
        network_reason = network_blocker(networks)  # one look at the model's layers for both switches
        if self.plan.lean_step.enabled:
            self._update_lean_step(networks, network_reason)
        if self.plan.cuda_graph.enabled:
            self._update_cuda_graph(network_reason)

    def _update_lean_step(self, networks, network_reason: str | None) -> None:
        blocker = "the Lora built-in is not loaded, there is nothing to bypass" if networks is None else network_reason
        if blocker is None:
            if self.lean_undo is None:
                self.lean_undo = bypass_lora_wrappers(networks)
            self._mark_used(KEY_LEAN_STEP)
        else:
            self._drop("lean_undo")
            self.note_once(f"lean step off for this pass: {blocker}")

    def _update_cuda_graph(self, network_reason: str | None) -> None:
        unet = shared.sd_model.model.diffusion_model
        self._drop("graph_undo")
        blocker = cuda_graph_blocker(self, network_reason)
        if blocker is None:
            if self.graph_stats_before is None:
                self.graph_stats_before = GRAPHS.stats.as_json()
            try:
                self.graph_undo = apply_cuda_graph(unet, GRAPHS, graph_context_key(unet))
            except SpeedkitError as error:
                blocker = str(error)
        if blocker is None:
            self._mark_used(KEY_CUDA_GRAPH)
        else:
            self.note_once(f"CUDA graph not used for this pass: {blocker}")

    def _mark_used(self, key: str) -> None:
        """Infotext claims a pass-level switch only once a pass really used it."""
        self.used_keys.add(key)
        self.record.applied[key] = "True"
        self.p.extra_generation_params[key] = "True"

    def _drop(self, name: str) -> None:
        undo = getattr(self, name)
        setattr(self, name, None)
        if undo is not None:
            undo()

    # -- inside sampling: the CFG denoiser wrapper
    def denoise(self, original, denoiser, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        self.rows_before_call = self.unet_rows
        self.current_x, self.current_sigma = x, sigma
        skip = self.policy is not None and not self.policy.run_uncond(
            denoiser.step, denoiser.total_steps, math.nan, self.similarities
        )
        if skip:
            result = self._denoise_without_uncond(original, denoiser, x, sigma, uncond, cond, cond_scale, image_cond)
        else:
            result = original(denoiser, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        if self.unet_rows - self.rows_before_call > x.shape[0]:
            self.record.unet_calls_with_uncond += 1
        else:
            self.record.unet_calls_without_uncond += 1
        return result

    def _denoise_without_uncond(self, original, denoiser, x, sigma, uncond, cond, cond_scale, image_cond):
        """Let the host skip the uncond pass, decided on the CPU: the host's "skip early CFG" test
        (`step / total <= option`) with the option at 1 for this call. Its NGMS test would compare
        a GPU sigma and wait for the GPU on every step. Leaves no host infotext behind."""
        params = self.p.extra_generation_params
        saved = {key: params[key] for key in HOST_SKIP_KEYS if key in params}
        restore_option = set_option_temporarily("skip_early_cond", 1.0)
        try:
            return original(denoiser, x, sigma, uncond, cond, cond_scale, 0.0, image_cond)
        finally:
            restore_option()
            for key in HOST_SKIP_KEYS:
                params.pop(key, None)
            params.update(saved)

    def record_similarity(self, x_out: torch.Tensor) -> None:
        """on_cfg_denoised: remember the cond/uncond similarity (adaptive mode, plain prompts)."""
        if self.policy is None or not self.policy.needs_similarity or self.current_x is None:
            return
        batch = self.current_x.shape[0]
        uncond_ran = self.unet_rows - self.rows_before_call > batch
        if uncond_ran and x_out.shape[0] == 2 * batch:
            self.similarities.append(
                noise_prediction_similarity(self.current_x, self.current_sigma, x_out[:batch], x_out[batch:])
            )

    # -- refusing and restoring
    def refuse(self, reason: str) -> None:
        """Make this generation fail with a clear message before sampling (nothing applied)."""
        message = f"Speedkit did not run this generation: {reason}"
        self.record.refused = message
        print(f"[speedkit] {message}")

        def refuse_sampling(*_args, **_kwargs):
            raise GenerationRefused(message)

        self.p.sample = refuse_sampling

    def note(self, text: str) -> None:
        self.record.notes.append(text)
        print(f"[speedkit] {text}")
        if self.activated:  # after activate: keep the infotext's note current
            self.p.extra_generation_params[NOTE_KEY] = "; ".join(self.record.notes)

    def note_once(self, text: str) -> None:
        if text not in self.record.notes:
            self.note(text)

    def _undo_all(self) -> None:
        late = [undo for undo in (self.tome_undo, self.lean_undo, self.graph_undo) if undo is not None]
        undos = [*self.undos, *late]
        self.undos, self.tome_undo, self.lean_undo, self.graph_undo, self.policy = [], None, None, None, None
        run_in_reverse(undos)

    def finish(self) -> None:
        try:
            self._undo_all()
        finally:
            self.record.finished = time.time()
            self.current_x = self.current_sigma = None
            if self.graph_stats_before is not None:
                self.record.cuda_graph = graph_stats_since(self.graph_stats_before)


# --------------------------------------------------------------------------- fast path and lean step

GRAPHS = GraphCache()
"""The process's CUDA graphs of the UNet (released on model load, unload and when a generation
runs without the switch)."""

HOST_SKIP_KEYS = ("NGMS", "NGMS all steps", "Skip Early CFG")
PASS_LEVEL_KEYS = (KEY_CUDA_GRAPH, KEY_LEAN_STEP)
LORA_WRAPPED_FORWARDS = (
    (torch.nn.Linear, "network_Linear_forward"),
    (torch.nn.Conv2d, "network_Conv2d_forward"),
    (torch.nn.GroupNorm, "network_GroupNorm_forward"),
    (torch.nn.LayerNorm, "network_LayerNorm_forward"),
    (torch.nn.MultiheadAttention, "network_MultiheadAttention_forward"),
)
LORA_PATCH_KEY = "lora_patches"  # the key the Lora built-in patches torch.nn classes under


def lora_builtin():
    """The Lora built-in's `networks` module, or None when it is not loaded (disabled)."""
    module = sys.modules.get("networks")
    if module is None or not hasattr(module, "loaded_networks") or not hasattr(module, "network_Linear_forward"):
        return None
    return module


def lora_weights_still_applied() -> bool:
    """True while some layer still carries a network's weights (the wrappers restore them on the
    next call, so they must run once)."""
    return any(getattr(module, "network_current_names", ()) for module in shared.sd_model.modules())


def network_blocker(networks) -> str | None:
    """Why this pass must run the Lora built-in's layer code (None: it need not): networks are
    loaded, or a previous network's weights are still to be restored by it. Both the lean step
    and the CUDA graph must leave that code alone then."""
    if networks is not None and networks.loaded_networks:
        return f"{len(networks.loaded_networks)} LoRA/network(s) loaded (their layer code runs on every call)"
    if lora_weights_still_applied():
        return "a previous LoRA's weights are restored on this pass"
    return None


def bypass_lora_wrappers(networks) -> Undo:
    """Put the originals the Lora built-in keeps back on the torch.nn classes it wraps; the undo
    puts its wrappers back. Classes someone else re-patched on top are left alone."""
    swapped = []
    for cls, wrapper_name in LORA_WRAPPED_FORWARDS:
        wrapper = getattr(networks, wrapper_name, None)
        original = patches.original(LORA_PATCH_KEY, cls, "forward")
        if wrapper is not None and original is not None and cls.forward is wrapper:
            cls.forward = original
            swapped.append((cls, wrapper, original))

    def restore() -> None:
        for cls, wrapper, original in swapped:
            if cls.forward is original:
                cls.forward = wrapper

    return Undo(restore, "lean step")


def lean_step_active() -> bool:
    networks = lora_builtin()
    return networks is not None and torch.nn.Linear.forward is not networks.network_Linear_forward


def cuda_graph_blocker(generation: Generation, network_reason: str | None) -> str | None:
    """Why this sampling pass cannot be replayed from CUDA graphs (None: it can)."""
    if shared.device.type != "cuda":
        return f"the WebUI runs on {shared.device.type}, CUDA graphs need a CUDA device"
    if network_reason is not None:
        return network_reason
    if shared.loaded_hypernetworks:
        return "hypernetworks loaded"
    if generation.tome is not None and generation.tome.use_rand:
        return "random ToMe draws new destinations on every call"
    from modules import sd_unet

    if sd_unet.current_unet is not None:
        return f"another UNet implementation is active ({sd_unet.current_unet_option.label})"
    return None


def graph_context_key(unet: torch.nn.Module) -> tuple:
    """What the graphs of this pass depend on beyond their call arguments."""
    return (
        id(unet),
        module_fingerprint(unet),
        tome_settings_key(unet),
        current_backend_title(),
        bool(shared.opts.upcast_attn),
    )


def graph_stats_since(before: dict) -> dict:
    now = GRAPHS.stats.as_json()
    eager = {
        reason: count - before["eager_calls"].get(reason, 0)
        for reason, count in now["eager_calls"].items()
        if count - before["eager_calls"].get(reason, 0)
    }
    return {
        "replays": now["replays"] - before["replays"],
        "captures": now["captures"] - before["captures"],
        "eager_calls": eager,
        "capture_seconds": round(now["capture_seconds"] - before["capture_seconds"], 3),
        "cached_graphs": len(GRAPHS),
    }


def release_graphs(*_args) -> None:
    if len(GRAPHS) or GRAPHS.failed:
        GRAPHS.release()
        GRAPHS.forget_failures()


def snapshot_options(keys) -> callable:
    """Remember WebUI options exactly (also "never set", which the host's own override restore
    forgets: it restores only keys already in opts.data); returns the function restoring them."""
    data = shared.opts.data
    saved = {key: (key in data, data.get(key)) for key in keys}

    def restore() -> None:
        for key, (had_key, previous) in saved.items():
            if had_key:
                data[key] = previous
            else:
                data.pop(key, None)

    return restore


def set_option_temporarily(key: str, value) -> callable:
    """Set a WebUI option without running its change handlers; returns the function restoring it."""
    restore = snapshot_options([key])
    shared.opts.data[key] = value
    return restore


def cutoff_guard(p, cutoff: GuidanceCutoffConfig) -> str | None:
    """Why the cutoff cannot apply to this generation (None: it can)."""
    model = shared.sd_model
    if getattr(model.model, "conditioning_key", None) in ("hybrid", "concat") or getattr(
        model, "is_sdxl_inpaint", False
    ):
        return "inpainting models take an image condition the uncond skip does not shrink (A1111 #10802)"
    if getattr(model, "cond_stage_key", None) == "edit":
        return "instruct-pix2pix edit models need their image guidance pass"
    if cutoff.mode == "sigma" and getattr(p, "sampler_name", None) in TIMESTEP_SAMPLERS:
        return f"the {p.sampler_name} sampler works in timesteps, not sigmas"
    return None


# --------------------------------------------------------------------------- module state and hooks


@dataclass
class AdapterState:
    active: Generation | None = None
    last: GenerationRecord | None = None
    installed: bool = False
    keep_graphs: bool = False  # a bench matrix alternating switches keeps the graphs until it ends


STATE = AdapterState()


def prepare_generation(p, args, overrides=None) -> None:
    """before_process: build the plan from the script args; refuse bad input; set host overrides."""
    try:
        plan = plan_from_args(args, overrides or getattr(p, "speedkit_overrides", None))
    except SpeedkitError as error:
        _start(Generation(p, SpeedPlan())).refuse(str(error))
        return
    prepare_generation_with_plan(p, plan)


def prepare_generation_with_plan(p, plan: SpeedPlan | None) -> None:
    """Like prepare_generation, for a plan built elsewhere (the benchmark); None: Speedkit off."""
    if (plan is None or not plan.cuda_graph.enabled) and not STATE.keep_graphs:
        release_graphs()  # the switch is off: give the graphs' memory back
    if plan is None:
        if STATE.active is not None:
            finish_generation(STATE.active.p)
        STATE.last = GenerationRecord(enabled=False, finished=time.time())
        return
    _start(Generation(p, plan)).prepare()


def _start(generation: Generation) -> Generation:
    if STATE.active is not None:  # a leaked generation (should not happen): restore it first
        finish_generation(STATE.active.p)
    STATE.active = generation
    STATE.last = generation.record
    return generation


def _active_for(p) -> Generation | None:
    generation = STATE.active
    return generation if generation is not None and generation.p is p else None


def activate_generation(p) -> str | None:
    """process: apply the switches. Returns the refusal message when the plan could not be applied."""
    generation = _active_for(p)
    if generation is None:
        return None
    if generation.record.refused is None:
        generation.activate()
    return generation.record.refused


def before_hires(p) -> None:
    generation = _active_for(p)
    if generation is not None:
        generation.before_hires()


def before_sampling(p) -> None:
    generation = _active_for(p)
    if generation is not None:
        generation.before_sampling()


def finish_generation(p) -> None:
    generation = _active_for(p)
    if generation is None:
        return
    STATE.active = None
    generation.finish()


def _process_images_inner(original):
    def process_images_inner(p):
        try:
            return original(p)
        finally:
            finish_generation(p)

    return process_images_inner


def _cfg_denoiser_forward(original):
    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        generation = _active_for(getattr(self, "p", None))
        if generation is None:
            return original(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)
        return generation.denoise(original, self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)

    return forward


def _on_cfg_denoised(params) -> None:
    generation = STATE.active
    if generation is not None:
        generation.record_similarity(params.x)


def _validating_init_script_args(original):
    """Wrap the API's script-argument assembly: invalid Speedkit args -> HTTP 422, before anything runs."""

    def init_script_args(self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw):
        script_args = original(
            self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, **kw
        )
        check_api_args(script_runner, script_args)
        return script_args

    return init_script_args


def check_api_args(script_runner, script_args) -> None:
    from fastapi import HTTPException

    script = next((s for s in script_runner.alwayson_scripts if s.title() == SCRIPT_TITLE), None)
    if script is None:
        return
    try:
        plan = plan_from_args(script_args[script.args_from : script.args_to])
        if plan is not None:
            check_plan_can_run(plan)
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit: {error}") from None


def check_plan_can_run(plan: SpeedPlan) -> None:
    """Refuse, before a generation starts, what cannot run in this WebUI."""
    if is_forge() and (plan.attention.enabled or plan.cutoff.enabled):
        raise SpeedkitError(FORGE_NOTE)
    if plan.attention.enabled:
        resolve_backend(plan.attention.backend)
        check_backend_runnable(plan.attention.backend)


# --------------------------------------------------------------------------- status


def unet_memory_format() -> str:
    model = shared.sd_model
    if model is None:
        return "n/a (no model loaded)"
    return "channels_last" if is_channels_last(model.model.diffusion_model) else "contiguous"


def status() -> dict:
    """GET /speedkit/v1/status."""
    model = shared.sd_model
    active = STATE.active
    return {
        "attention": {
            "current": current_backend_title(),
            "configured": shared.opts.cross_attention_optimization,
            "unavailable": unavailable_backends(),
        },
        "unet_memory_format": unet_memory_format(),
        "tome_active": bool(model is not None and has_tome_patch(model.model.diffusion_model)),
        "cfg_wrapper_active": bool(active is not None and active.policy is not None),
        "cuda_graph": {
            "active": bool(model is not None and graphed_forward_of(model.model.diffusion_model) is not None),
            "cached_graphs": len(GRAPHS),
            "totals": GRAPHS.stats.as_json(),
        },
        "lean_step_active": lean_step_active(),
        "generation_active": active is not None,
        "last_generation": STATE.last.as_json() if STATE.last is not None else None,
        "forge": is_forge(),
    }


def _on_app_started(_demo, app) -> None:
    from .access import add_route

    add_route(app, "/speedkit/v1/status", status, ["GET"], needs_api=False)


# --------------------------------------------------------------------------- XYZ plot axes


def _xyz_module():
    from modules import scripts

    found = [x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"]
    return found[0].module if found else None


def _set_override(name: str):
    def apply(p, value, _values):
        p.speedkit_overrides = {**getattr(p, "speedkit_overrides", {}), name: value}

    return apply


def cutoff_overrides(text: str) -> dict[str, str]:
    """An XYZ cutoff value as script-arg overrides: "fraction 0.75" -> mode and value; "off" -> mode."""
    mode, _, value = text.strip().partition(" ")
    overrides = {"cutoff_mode": mode.lower()}
    if value.strip():
        overrides["cutoff_value"] = value.strip()
    return overrides


def _apply_cutoff_axis(p, value, _values):
    p.speedkit_overrides = {**getattr(p, "speedkit_overrides", {}), **cutoff_overrides(value)}


def _confirm_values(name: str):
    def confirm(_p, values):
        for value in values:
            plan_from_args([True], {name: value})

    return confirm


def _confirm_cutoffs(_p, values):
    for value in values:
        plan_from_args([True], cutoff_overrides(value))


def add_xyz_axes() -> None:
    xyz = _xyz_module()
    if xyz is None or any(opt.label.startswith("[Speedkit]") for opt in xyz.axis_options):
        return
    boolean = xyz.boolean_choice(reverse=True)
    xyz.axis_options.extend(
        [
            xyz.AxisOption(
                "[Speedkit] Attention backend",
                str,
                _set_override("attention"),
                confirm=_confirm_values("attention"),
                choices=backend_choices,
            ),
            xyz.AxisOption(
                "[Speedkit] Guidance cutoff",
                str,
                _apply_cutoff_axis,
                confirm=_confirm_cutoffs,
                choices=lambda: ["off", "sigma 1.0", "fraction 0.5", "fraction 0.75", "adaptive 0.995"],
            ),
            xyz.AxisOption(
                "[Speedkit] ToMe ratio", float, _set_override("tome_ratio"), confirm=_confirm_values("tome_ratio")
            ),
            xyz.AxisOption(
                "[Speedkit] ToMe max downsample",
                int,
                _set_override("tome_max_downsample"),
                confirm=_confirm_values("tome_max_downsample"),
                choices=lambda: ["1", "2", "4", "8"],
            ),
            xyz.AxisOption(
                "[Speedkit] Channels-last",
                str,
                _set_override("channels_last"),
                confirm=_confirm_values("channels_last"),
                choices=boolean,
            ),
        ]
    )


# --------------------------------------------------------------------------- install / unload


_PATCHES = (
    (processing, "process_images_inner", _process_images_inner),
    (sd_samplers_cfg_denoiser.CFGDenoiser, "forward", _cfg_denoiser_forward),
)


def _api_patch_target():
    from modules.api import api

    return api.Api, "init_script_args", _validating_init_script_args


def install_patches() -> None:
    for owner, name, make_wrapper in (*_PATCHES, _api_patch_target()):
        if patches.original(PATCH_KEY, owner, name) is None:
            patches.patch(PATCH_KEY, owner, name, make_wrapper(getattr(owner, name)))


def remove_patches() -> None:
    for owner, name, _ in (*_PATCHES, _api_patch_target()):
        if patches.original(PATCH_KEY, owner, name) is not None:
            patches.undo(PATCH_KEY, owner, name)


def patches_removed() -> callable:
    """Take the extension's patches out (as if it were not installed); returns the function
    putting them back. The bench uses it to measure what the extension costs when off."""
    if STATE.active is not None:
        raise SpeedkitError("a Speedkit generation is running")
    remove_patches()
    return install_patches


def install() -> None:
    """Install the patches and callbacks (idempotent); scripts/speedkit.py calls it at import."""
    if STATE.installed:
        return
    install_patches()
    script_callbacks.on_list_optimizers(lambda res: res.extend(make_kernel_optimizers()), name="speedkit_kernels")
    script_callbacks.on_cfg_denoised(_on_cfg_denoised, name="speedkit_similarity")
    script_callbacks.on_app_started(_on_app_started, name="speedkit_routes")
    script_callbacks.on_before_ui(add_xyz_axes, name="speedkit_xyz")
    script_callbacks.on_script_unloaded(unload, name="speedkit_unload")
    script_callbacks.on_model_loaded(release_graphs, name="speedkit_release_graphs")
    STATE.installed = True


def unload() -> None:
    """Restore an active generation and remove the patches (before a UI reload)."""
    if STATE.active is not None:
        finish_generation(STATE.active.p)
    remove_patches()
    release_graphs()
    STATE.installed = False
