"""One generation with Speedkit: the plan applied through the engine (lib_speedkit.apply) with the
WebUI's appliers (HostHooks built from `modules.*`), and its record. webui/hooks.py drives it.

Generation features (channels-last, attention, ToMe, cutoff) are applied at `process`; a plan
that cannot apply is refused with the reason, and an unexpected error undoes everything and
fails the generation with the error. Pass features (CUDA graph, compiled UNet, lean step,
DeepCache) are decided for each sampling pass (the hires pass with its own DeepCache interval)
and taken off right after it; the infotext claims each only for what its passes really ran. A
generation inside another one (ADetailer's pass) applies only its cutoff: the UNet's switches
stay as the outer generation set them.
"""

from __future__ import annotations

import time
from dataclasses import replace

from modules import shared

from ..appliers import host_appliers
from ..apply import GENERATION_FEATURES, PASS_FEATURES, AppliedPlan, apply_plan
from ..deepcache import deepcache_forward_of
from ..errors import SpeedkitError
from ..plan import (
    INFOTEXT_FEATURES,
    KEY_COMPILE,
    KEY_CUDA_GRAPH,
    SpeedPlan,
    TokenMergingConfig,
    format_infotext,
)
from ..undo import Undo
from . import compiled, cutoff, deepcache, fast_path, vae_decoder
from .availability import check_plan_can_run
from .host_hooks import generation_hooks
from .record import GenerationRecord, GraphCalls, compiled_claim, deepcache_claim, deepcache_totals, graph_claim

NOTE_KEY = "Speedkit note"
HOST_TOME_OPTIONS = ("token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr")
NESTED_FEATURES = ("cutoff",)
"""What a generation nested in another applies itself: the cutoff (per `p`); the UNet's switches
stay as the outer generation set them."""
NESTED_NOTE = (
    "ran inside another Speedkit generation (e.g. ADetailer's pass): attention, ToMe and channels-last "
    "as that generation set them"
)


class GenerationRefused(SpeedkitError):
    """Speedkit could not apply the requested plan, so the generation does not run."""


class Generation:
    """Speedkit's state for one `process_images` call."""

    def __init__(self, p, plan: SpeedPlan, outer: Generation | None = None):
        self.p = p
        self.plan = self._for_this_image(plan)
        self.outer = outer
        self.record = GenerationRecord(requested=format_infotext(plan), nested=outer is not None)
        self.applied: AppliedPlan | None = None
        self.guidance: cutoff.GuidancePass | None = None
        self.pass_networks = fast_path.PassNetworks(None, None)
        self.in_pass = False
        self.failure: GenerationRefused | None = None
        self.graph_calls = GraphCalls()
        self.pass_graph_before: dict | None = None
        self.steps = deepcache.DenoiserSteps()
        self.compile_failures_before = 0
        self.vae_decoder = None  # the compiled VAE decoder's forward (webui/vae_decoder.py)

    def _for_this_image(self, plan: SpeedPlan) -> SpeedPlan:
        tome = plan.tome
        if tome.use_rand and tome.seed is None:
            tome = replace(tome, seed=int(self.p.all_seeds[0]) % 2**63)
        deep = plan.deepcache
        if not getattr(self.p, "enable_hr", False):  # no hires pass: do not claim hires settings
            tome = replace(tome, hr_ratio=0.0)
            deep = replace(deep, hr_interval=0)
        return replace(plan, tome=tome, deepcache=deep)

    # -- before_process: p fields and overrides, applied and restored by the host
    def prepare(self) -> None:
        if self.plan.tome.enabled and self.outer is None:
            for option in HOST_TOME_OPTIONS:
                self.p.override_settings[option] = 0.0
            self.p.token_merging_ratio = 0.0
            self.p.token_merging_ratio_hr = 0.0

    # -- process: apply the generation features
    def activate(self) -> None:
        unet = shared.sd_model.model.diffusion_model
        features = NESTED_FEATURES if self.outer is not None else GENERATION_FEATURES
        try:
            check_plan_can_run(self.plan)
            self.applied = apply_plan(
                unet, self.plan, appliers=host_appliers(generation_hooks(self)), features=features, exclusive=False
            )
            applied_cutoff = self.plan.cutoff if "cutoff" in self.applied.applied else None
            self.guidance = cutoff.GuidancePass(self.p, applied_cutoff)
            counter = unet.register_forward_pre_hook(self.guidance.count_rows)
            self.applied.stack.set("guidance counter", Undo(counter.remove, "unet call counter"))
        except BaseException as error:  # noqa: BLE001 - undone whatever it was; re-raised unless an Exception
            self._undo_after(error)
            self.refuse(_reason(error))
            return
        if self.outer is not None:
            self.note(NESTED_NOTE)
        self._claim({*(self.applied.applied & set(GENERATION_FEATURES)), "mode"})
        for reason in self.applied.skipped.values():
            self.note(reason)

    def _undo_after(self, error: BaseException) -> None:
        """Something failed after (part of) the plan was applied: nothing may stay applied."""
        applied, self.applied, self.guidance = self.applied, None, None
        if applied is not None:
            applied()
        if not isinstance(error, Exception):
            raise error

    def _fail_during_sampling(self, error: BaseException, where: str) -> None:
        """A failure inside a sampling pass's hooks (the WebUI would only log it): undo
        everything and make the next denoiser call fail with the reason."""
        self._undo_after(error)
        self.failure = GenerationRefused(f"Speedkit failed {where}, nothing of it stays applied: {_reason(error)}")

    def current_tome(self) -> TokenMergingConfig | None:
        """The ToMe settings on the UNet now (a nested generation runs under the outermost's)."""
        outermost = self
        while outermost.outer is not None:
            outermost = outermost.outer
        applied = outermost.applied
        return outermost.plan.tome if applied is not None and "tome" in applied.applied else None

    def _claim(self, features: set[str]) -> None:
        """Infotext and record claim a feature only once it really applied."""
        claimed = {
            key: value for key, value in format_infotext(self.plan).items() if INFOTEXT_FEATURES[key] in features
        }
        self.record.applied.update(claimed)
        self.p.extra_generation_params.update(claimed)

    # -- before_hr: the hires pass may merge at another ratio
    def before_hires(self) -> None:
        tome = self.plan.tome
        if self.applied is None or self.outer is not None or not tome.enabled or not tome.hr_ratio:
            return
        self.after_sampling()
        try:
            self.applied.apply(["tome"], plan=replace(self.plan, tome=tome.for_hires_pass()))
        except BaseException as error:  # noqa: BLE001 - undone whatever it was; re-raised unless an Exception
            self._fail_during_sampling(error, "applying the hires pass's ToMe")

    # -- process_before_every_sampling / post_sample: the pass features for one sampling pass
    def before_sampling(self) -> None:
        if self.applied is None:
            return
        self.after_sampling()
        self.guidance.new_pass()
        self.in_pass = True
        self.record.passes.append({"unet_calls": self.guidance.counts(), "cuda_graph": None, "deepcache": None})
        if not (self.plan.cuda_graph.enabled or self.plan.lean_step.enabled or self.plan.deepcache.enabled):
            return
        unet = shared.sd_model.model.diffusion_model
        self.pass_networks = fast_path.PassNetworks.now()
        fast_path.set_graph_budget()
        try:
            self.pass_networks.apply_weights(unet)  # networks merged (or restored) before the pass
            self.pass_graph_before = fast_path.GRAPHS.stats.as_json()
            self.compile_failures_before = len(compiled.COMPILER.failures)
            self.applied.begin_pass(self.pass_plan())
        except BaseException as error:  # noqa: BLE001 - undone whatever it was; re-raised unless an Exception
            self._fail_during_sampling(error, "preparing a sampling pass")
            return
        self._claim(self.applied.applied & {"lean_step"})  # the graph is claimed once its calls are counted
        for feature in PASS_FEATURES:
            if feature in self.applied.skipped:
                self.note_once(self.applied.skipped[feature])

    def pass_plan(self) -> SpeedPlan:
        """The plan of the sampling pass about to run: the hires pass has its own DeepCache interval."""
        if getattr(self.p, "is_hr_pass", False):
            return replace(self.plan, deepcache=self.plan.deepcache.for_hires_pass())
        return self.plan

    def after_sampling(self) -> None:
        """The pass is over: its pass features come off; its counts are recorded."""
        if self.applied is None or not self.in_pass:
            return
        self.in_pass = False
        self._compile_vae_decoder()
        graphed = "cuda_graph" in self.applied.applied
        compiled_pass = "compile" in self.applied.applied
        unet = getattr(getattr(shared.sd_model, "model", None), "diffusion_model", None)
        cached = deepcache_forward_of(unet) if unet is not None else None
        self.applied.end_pass()
        current = self.record.passes[-1]
        if cached is not None:
            current["deepcache"] = cached.counts.as_json()
            if deepcache_claim(self.record.passes):
                self._claim({"deepcache"})
        started = current["unet_calls"]
        counts = self.guidance.counts()
        current["unet_calls"] = {key: counts[key] - started[key] for key in counts}
        if self.pass_graph_before is not None:
            current["cuda_graph"] = fast_path.GRAPHS.stats.since(self.pass_graph_before)
            self.pass_graph_before = None
            if graphed:
                self.graph_calls.add(current["cuda_graph"])
                current["compiled"] = (
                    compiled_pass and self._compiled_without_failure() and not current["cuda_graph"]["eager_calls"]
                )
                self._claim_graph()

    def _compile_vae_decoder(self) -> None:
        """With compile_unet, the decodes after sampling run the compiled VAE decoder (installed
        after sampling, so that an extension that wraps the decoder during the generation, such
        as a tiled VAE, is seen and left alone; removed with everything else)."""
        if self.plan.compile.enabled and self.outer is None and self.vae_decoder is None:
            undo, self.vae_decoder, note = vae_decoder.compile_vae_decoder()
            self.applied.stack.set("vae decoder", undo)
            if note:
                self.note_once(note)

    def _compiled_without_failure(self) -> bool:
        """The pass's compiled forwards compiled (a failure ran them uncompiled: noted)."""
        failures = compiled.COMPILER.failures[self.compile_failures_before :]
        for failure in failures:
            self.note_once(f"compiled UNet: compiling failed, the graph replayed the uncompiled UNet: {failure}")
        return not failures

    def _claim_graph(self) -> None:
        """The graph and the compiled UNet as far as the graphed passes so far ran them (record.py
        says when); each eager reason becomes a note."""
        for reason, count in self.graph_calls.eager.items():
            self.note_once(f"CUDA graph: {count} UNet call(s) ran eagerly: {reason}")
        graph = graph_claim(self.graph_calls)
        self._set_claim(KEY_CUDA_GRAPH, graph)
        self._set_claim(KEY_COMPILE, "True" if graph and compiled_claim(self.record.passes) else None)

    def _set_claim(self, key: str, value: str | None) -> None:
        """Claim `key: value` in the record and the infotext; None takes the claim back."""
        for claims in (self.record.applied, self.p.extra_generation_params):
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value

    # -- refusing, notes, restoring
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
        self.p.extra_generation_params[NOTE_KEY] = "; ".join(self.record.notes)

    def note_once(self, text: str) -> None:
        if text not in self.record.notes:
            self.note(text)

    def finish(self) -> None:
        try:
            self.after_sampling()
            if self.applied is not None:
                self.applied()
        finally:
            self.record.finished = time.time()
            if self.guidance is not None:
                self.record.unet_calls = self.guidance.counts()
                self.guidance.current = None
            self.record.deepcache = deepcache_totals(self.record.passes)
            self.record.vae_decoder = vae_decoder.decoder_counts(self.vae_decoder)
            if self.graph_calls.total:
                self.record.cuda_graph = {
                    "replays": self.graph_calls.replays,
                    "eager_calls": dict(self.graph_calls.eager),
                    "captures": sum((p["cuda_graph"] or {}).get("captures", 0) for p in self.record.passes),
                    "cached_graphs": len(fast_path.GRAPHS),
                }


def _reason(error: BaseException) -> str:
    return str(error) if isinstance(error, SpeedkitError) else f"{type(error).__name__}: {error}"
