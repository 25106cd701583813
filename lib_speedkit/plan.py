"""SpeedPlan: what one generation asks Speedkit to change, validated, and its infotext form.

One frozen dataclass per feature. Construction validates: an invalid plan cannot exist, and the
error names the field and the allowed values. A disabled feature always carries its default
settings (they are normalised on construction), so a plan round-trips exactly through infotext,
which only records non-default values.

Infotext keys (values as written by :func:`format_infotext`)::

    Speedkit attention: sdp-flash
    Speedkit cutoff: fraction 0.75          (or "sigma 1.5", "adaptive 0.995")
    Speedkit ToMe: 0.5
    Speedkit ToMe hr: 0.3                   (hires pass ratio, when it differs)
    Speedkit ToMe downsample: 2
    Speedkit ToMe stride: 2x2
    Speedkit ToMe random: True
    Speedkit ToMe seed: 1234
    Speedkit channels-last: True
    Speedkit CUDA graph: True
    Speedkit lean step: True
    Speedkit DeepCache: 3                   (a full UNet step every 3 steps)
    Speedkit DeepCache branch: 1            (when not 0)
    Speedkit DeepCache start: 2             (full steps at the start, when not 0)
    Speedkit DeepCache end: 1               (full steps at the end, when not 0)
    Speedkit DeepCache hr: 1                (the hires pass's interval, when it differs)
    Speedkit compiled UNet: True
    Speedkit mode: Lossless                 (the speed mode the switches came from; none for Custom)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .errors import PlanError, allowed_choices
from .modes import CUSTOM, MODE_NAMES, OFF

KEEP = "keep"
"""Attention choice that leaves the current backend in place."""

LIBRARY_BACKENDS = ("v1", "sdp", "sdp-flash", "sdp-efficient", "sdp-cudnn", "sdp-math", "xformers")
"""Backends lib_speedkit implements itself (see attention.py)."""

HOST_BACKENDS = ("sdp-no-mem", "doggettx", "sub-quadratic", "invokeai", "none")
"""Backends only the WebUI host provides; lib_speedkit never re-implements them."""

ATTENTION_CHOICES = (KEEP, *LIBRARY_BACKENDS, *HOST_BACKENDS)

CUTOFF_MODES = ("off", "sigma", "fraction", "adaptive")
CUTOFF_DEFAULT_VALUES = {"off": 0.0, "sigma": 1.0, "fraction": 0.75, "adaptive": 0.995}
TOME_MAX_RATIO = 0.75
TOME_DOWNSAMPLES = (1, 2, 4, 8)
TOME_MAX_STRIDE = 8
TOME_MAX_SEED = 2**64 - 1
DEEPCACHE_MAX_INTERVAL = 10
DEEPCACHE_MAX_BRANCH = 11
"""SD1/SD2 UNets have 12 skip connections (0-11), SDXL's 9 (0-8): a deeper branch than the
loaded UNet has is left out for that generation, with a note."""
DEEPCACHE_MAX_WINDOW = 1000
COMPILE_NEEDS_GRAPH = "only with cuda_graph on (the compiled UNet replays from CUDA graphs)"
"""The largest seed torch's generators take (manual_seed refuses more)."""

INFOTEXT_PREFIX = "Speedkit "
KEY_ATTENTION = "Speedkit attention"
KEY_CUTOFF = "Speedkit cutoff"
KEY_TOME = "Speedkit ToMe"
KEY_TOME_HR = "Speedkit ToMe hr"
KEY_TOME_DOWNSAMPLE = "Speedkit ToMe downsample"
KEY_TOME_STRIDE = "Speedkit ToMe stride"
KEY_TOME_RANDOM = "Speedkit ToMe random"
KEY_TOME_SEED = "Speedkit ToMe seed"
KEY_CHANNELS_LAST = "Speedkit channels-last"
KEY_CUDA_GRAPH = "Speedkit CUDA graph"
KEY_LEAN_STEP = "Speedkit lean step"
KEY_MODE = "Speedkit mode"
KEY_DEEPCACHE = "Speedkit DeepCache"
KEY_DEEPCACHE_BRANCH = "Speedkit DeepCache branch"
KEY_DEEPCACHE_START = "Speedkit DeepCache start"
KEY_DEEPCACHE_END = "Speedkit DeepCache end"
KEY_DEEPCACHE_HR = "Speedkit DeepCache hr"
KEY_COMPILE = "Speedkit compiled UNet"
INFOTEXT_FEATURES = {
    KEY_ATTENTION: "attention",
    KEY_CUTOFF: "cutoff",
    KEY_TOME: "tome",
    KEY_TOME_HR: "tome",
    KEY_TOME_DOWNSAMPLE: "tome",
    KEY_TOME_STRIDE: "tome",
    KEY_TOME_RANDOM: "tome",
    KEY_TOME_SEED: "tome",
    KEY_CHANNELS_LAST: "channels_last",
    KEY_CUDA_GRAPH: "cuda_graph",
    KEY_LEAN_STEP: "lean_step",
    KEY_MODE: "mode",
    KEY_DEEPCACHE: "deepcache",
    KEY_DEEPCACHE_BRANCH: "deepcache",
    KEY_DEEPCACHE_START: "deepcache",
    KEY_DEEPCACHE_END: "deepcache",
    KEY_DEEPCACHE_HR: "deepcache",
    KEY_COMPILE: "compile",
}
"""Infotext key -> the SpeedPlan feature it records."""


def canonical_backend_name(name: str) -> str:
    """Map a backend name or a WebUI optimizer title to its canonical lower-case name.

    ``"sdp - scaled dot product"`` -> ``"sdp"``, ``"V1 - original v1"`` -> ``"v1"``,
    ``"Doggettx"`` -> ``"doggettx"``. Unknown names are returned lower-cased (validation rejects them).
    """
    return name.split(" - ", 1)[0].strip().lower()


def _real(field_name: str, value: object, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PlanError(field_name, value, allowed)
    return float(value)


def _integer(field_name: str, value: object, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise PlanError(field_name, value, allowed)
    return value


def _flag(field_name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PlanError(field_name, value, "True or False")
    return value


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class AttentionConfig:
    """Cross-attention backend for the UNet.

    Cost: none in quality for the exact backends (`sdp*`, `v1`, `xformers` compute the same
    attention; results differ only by float rounding, and `sdp-math` is deterministic). Memory:
    `v1`/`sdp-math` materialise the full attention matrix (quadratic in tokens); flash/efficient/
    xformers kernels do not.
    """

    backend: str = KEEP

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str):
            raise PlanError("attention.backend", self.backend, allowed_choices(ATTENTION_CHOICES))
        name = canonical_backend_name(self.backend)
        if name not in ATTENTION_CHOICES:
            raise PlanError("attention.backend", self.backend, allowed_choices(ATTENTION_CHOICES))
        _set(self, "backend", name)

    @property
    def enabled(self) -> bool:
        return self.backend != KEEP


@dataclass(frozen=True)
class GuidanceCutoffConfig:
    """When to stop running the unconditional (negative prompt) UNet pass.

    Modes and the meaning of `value`:
      * ``off``: always run it (value ignored).
      * ``sigma``: skip at every step whose sigma < value (value > 0).
      * ``fraction``: skip for steps >= value * total steps (value in 0..1; 1 never skips).
      * ``adaptive``: skip for the rest of sampling once the cosine similarity of the cond and
        uncond noise predictions reaches value (tau, 0..1).
    Cost: each skipped step runs the UNet on half the batch (about half the GPU work of that
    step) and is pure conditional guidance; late steps change fine detail slightly, the negative
    prompt stops acting from the cutoff on. No extra memory.
    """

    mode: str = "off"
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in CUTOFF_MODES:
            raise PlanError("cutoff.mode", self.mode, allowed_choices(CUTOFF_MODES))
        if self.mode == "off":
            _set(self, "value", 0.0)
            return
        value = _real(f"cutoff.value ({self.mode})", self.value, self._allowed_values())
        if not self._value_ok(value):
            raise PlanError(f"cutoff.value ({self.mode})", self.value, self._allowed_values())
        _set(self, "value", value)

    def _allowed_values(self) -> str:
        return "a sigma > 0" if self.mode == "sigma" else "a number from 0 to 1"

    def _value_ok(self, value: float) -> bool:
        return value > 0 if self.mode == "sigma" else 0.0 <= value <= 1.0

    @classmethod
    def for_mode(cls, mode: str) -> GuidanceCutoffConfig:
        """The mode with its documented default value."""
        return cls(mode, CUTOFF_DEFAULT_VALUES.get(mode, 0.0))

    @property
    def enabled(self) -> bool:
        return self.mode != "off"


@dataclass(frozen=True)
class TokenMergingConfig:
    """Token merging (ToMe) on the self-attention of the UNet's transformer blocks.

    `ratio` is the share of tokens merged (0 = off, at most 0.75 and at most 1 - 1/(sx*sy));
    `hr_ratio` is the ratio for the WebUI's hires-fix pass (0 = the same as `ratio`, as in the
    WebUI's own ToMe settings); `max_downsample` (1/2/4/8) limits it to the layers with at most
    that downsampling; `sx`,`sy` are the stride of the destination grid; `use_rand` randomises
    the destination choice, drawn from a generator seeded with `seed` (None: a fork of torch's
    global generator, as tomesd does).
    Cost: lossy. Images change visibly from ~0.3 up, more with higher max_downsample; saves GPU
    work mainly at high resolutions (few % at 512², more at 1024²) and some attention memory.
    """

    ratio: float = 0.0
    hr_ratio: float = 0.0
    max_downsample: int = 1
    sx: int = 2
    sy: int = 2
    use_rand: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        ratio = _real("tome.ratio", self.ratio, f"a number from 0 to {TOME_MAX_RATIO}")
        if not 0.0 <= ratio <= TOME_MAX_RATIO:
            raise PlanError("tome.ratio", self.ratio, f"a number from 0 to {TOME_MAX_RATIO}")
        _set(self, "ratio", ratio)
        if ratio == 0.0:
            self._reset_to_defaults()
            return
        self._validate_options()

    def _reset_to_defaults(self) -> None:
        for name in ("hr_ratio", "max_downsample", "sx", "sy", "use_rand", "seed"):
            _set(self, name, getattr(TokenMergingConfig, name))

    def _validate_options(self) -> None:
        downsample = _integer("tome.max_downsample", self.max_downsample, allowed_choices(TOME_DOWNSAMPLES))
        if downsample not in TOME_DOWNSAMPLES:
            raise PlanError("tome.max_downsample", self.max_downsample, allowed_choices(TOME_DOWNSAMPLES))
        _set(self, "max_downsample", downsample)
        for name in ("sx", "sy"):
            stride = _integer(f"tome.{name}", getattr(self, name), f"an integer from 1 to {TOME_MAX_STRIDE}")
            if not 1 <= stride <= TOME_MAX_STRIDE:
                raise PlanError(f"tome.{name}", stride, f"an integer from 1 to {TOME_MAX_STRIDE}")
            _set(self, name, stride)
        hr_ratio = _real("tome.hr_ratio", self.hr_ratio, f"a number from 0 to {TOME_MAX_RATIO}")
        if not 0.0 <= hr_ratio <= TOME_MAX_RATIO:
            raise PlanError("tome.hr_ratio", self.hr_ratio, f"a number from 0 to {TOME_MAX_RATIO}")
        _set(self, "hr_ratio", 0.0 if hr_ratio == self.ratio else hr_ratio)
        stride_limit = 1.0 - 1.0 / (self.sx * self.sy)
        for name in ("ratio", "hr_ratio"):
            if getattr(self, name) > stride_limit:
                raise PlanError(
                    f"tome.{name}", getattr(self, name), f"at most {stride_limit:g} with stride {self.sx}x{self.sy}"
                )
        _flag("tome.use_rand", self.use_rand)
        if not self.use_rand:
            _set(self, "seed", None)
        elif self.seed is not None:
            allowed = f"an integer from 0 to {TOME_MAX_SEED} (2**64 - 1), or None"
            seed = _integer("tome.seed", self.seed, allowed)
            if not 0 <= seed <= TOME_MAX_SEED:
                raise PlanError("tome.seed", self.seed, allowed)
            _set(self, "seed", seed)

    @property
    def enabled(self) -> bool:
        return self.ratio > 0.0

    def for_hires_pass(self) -> TokenMergingConfig:
        """The settings for the hires-fix pass (its own ratio, the same options)."""
        return replace(self, ratio=self.hr_ratio or self.ratio, hr_ratio=0.0)


@dataclass(frozen=True)
class ChannelsLastConfig:
    """Run the UNet with channels-last (NHWC) convolution weights and inputs.

    Cost: lossless in value (same numbers, other memory layout; cuDNN may pick kernels whose
    rounding differs slightly). Converting the weights costs a one-off copy of the conv weights
    (transient memory of that size) when applied and again when undone.
    """

    enabled: bool = False

    def __post_init__(self) -> None:
        _flag("channels_last.enabled", self.enabled)


@dataclass(frozen=True)
class CudaGraphConfig:
    """Replay the UNet from CUDA graphs (the fast path, lib_speedkit/cuda_graph.py).

    Cost: lossless (a replay runs the kernels eager mode ran at capture, so outputs are
    bit-identical to eager with the same backend). Memory: the cached graphs keep about one extra
    UNet call's working memory (shared by all of them) until released; the first step at each new
    shape or batch pays a capture (a few eager calls). Where a graph could be wrong it is not used
    and the step runs eagerly, with a note: the Lora built-in computing networks on every call
    (lora_functional), hypernetworks, random ToMe, another extension hooking the UNet, no CUDA
    device, a capture that failed. LoRAs are merged into the layers before the pass (as the
    built-in's wrappers would on their first call), so the graph replays with them.
    """

    enabled: bool = False

    def __post_init__(self) -> None:
        _flag("cuda_graph.enabled", self.enabled)


@dataclass(frozen=True)
class LeanStepConfig:
    """Bypass the WebUI's built-in Lora per-layer forward wrappers during sampling (they check
    the loaded networks on every Linear/Conv2d/GroupNorm/LayerNorm call). LoRAs are merged into
    the layers before the pass, as the wrappers would do on their first call.

    Cost: none (bit-identical, with or without a LoRA); saves host time per step (about 1 ms of
    a 30 ms eager 512² step, nothing once the UNet is graphed). Stays off while the built-in
    computes networks on every call (Settings: lora_functional).
    """

    enabled: bool = False

    def __post_init__(self) -> None:
        _flag("lean_step.enabled", self.enabled)


@dataclass(frozen=True)
class DeepCacheConfig:
    """DeepCache: on most steps run only the UNet's shallow branch and reuse the deep features of
    the last full step (Ma et al., "DeepCache", CVPR 2024).

    `interval` N: a full UNet step every N steps, shallow ones between (1 = off). `branch`: the
    skip connection whose deeper features are reused, 0 = the shallowest (the most reuse, the
    fastest) up to 11 (SD1/SD2; SDXL has 0-8). `start` / `end`: steps at the start and at the end
    of each sampling pass that always run fully (composition forms early, fine detail late).
    `hr_interval`: N for the hires-fix pass (0 = the same as `interval`, 1 = no caching there).
    Steps are the sampler's model evaluations (second-order samplers make two per step).

    Cost: lossy. Shallow steps approximate the deep features by those of an earlier step; the
    image drifts from the uncached one, more with a larger N and a deeper branch (PSNR against
    stock per N in docs/BENCHMARKS.md). Memory: the cached deep features of one UNet call (a few
    MB at 512², about 20 MB for SDXL at 1024²). With the CUDA graph, full and shallow steps are
    two graphs per shape. Where another extension replaced the UNet's forward (ControlNet) it
    steps aside for that pass, with a note.
    """

    interval: int = 1
    branch: int = 0
    start: int = 0
    end: int = 0
    hr_interval: int = 0

    def __post_init__(self) -> None:
        interval_range = f"an integer from 1 to {DEEPCACHE_MAX_INTERVAL} (1 = off)"
        for name in ("interval", "hr_interval"):
            low = 1 if name == "interval" else 0
            allowed = interval_range if low else f"an integer from 0 to {DEEPCACHE_MAX_INTERVAL} (0 = same as interval)"
            value = _integer(f"deepcache.{name}", getattr(self, name), allowed)
            if not low <= value <= DEEPCACHE_MAX_INTERVAL:
                raise PlanError(f"deepcache.{name}", getattr(self, name), allowed)
            _set(self, name, value)
        if self.hr_interval == self.interval:
            _set(self, "hr_interval", 0)
        if not self.enabled:
            for name in ("branch", "start", "end", "hr_interval"):
                _set(self, name, getattr(DeepCacheConfig, name))
            return
        self._validate_options()

    def _validate_options(self) -> None:
        bounds = {"branch": DEEPCACHE_MAX_BRANCH, "start": DEEPCACHE_MAX_WINDOW, "end": DEEPCACHE_MAX_WINDOW}
        for name, high in bounds.items():
            allowed = f"an integer from 0 to {high}"
            value = _integer(f"deepcache.{name}", getattr(self, name), allowed)
            if not 0 <= value <= high:
                raise PlanError(f"deepcache.{name}", getattr(self, name), allowed)
            _set(self, name, value)

    @property
    def enabled(self) -> bool:
        return self.interval > 1 or self.hr_interval > 1

    @property
    def caches(self) -> bool:
        """True when this pass's settings reuse features (a hires-only config does not, before hires)."""
        return self.interval > 1

    def for_hires_pass(self) -> DeepCacheConfig:
        """The settings for the hires-fix pass (its own interval, the same branch and window)."""
        return replace(self, interval=self.hr_interval or self.interval, hr_interval=0)

    def full_step(self, step: int, total_steps: int | None) -> bool:
        """True when model evaluation `step` (from 0) of `total_steps` (None: unknown) must run
        the whole UNet: in the start or end window, or every `interval`-th step in between."""
        if self.interval <= 1 or step < self.start:
            return True
        if total_steps is not None and step >= total_steps - self.end:
            return True
        return (step - self.start) % self.interval == 0


@dataclass(frozen=True)
class CompileConfig:
    """Compile the UNet with torch.compile (inductor, one compiled graph per shape) and replay the
    compiled kernels from the CUDA graphs (it needs the CUDA graph switch). Weights stay inputs of
    the compiled code, so LoRA changes are seen without compiling again; switching channels-last
    compiles once more for the other weight layout (the compiled kernels assume their strides).

    Cost: near-lossless, not bit-identical (fused kernels round differently: within fp16 noise of
    eager). Time: the first generation at each new size or batch compiles (about a minute on an
    H200 for SD1.5 at 512², 11 s from inductor's on-disk cache after a restart; Interrupt stops
    the wait and that generation runs without it; the tab's Precompile prepares sizes ahead).
    Memory: the compiled kernels and their graphs (about one UNet call's working memory, as the
    CUDA graph). Needs a CUDA GPU, torch >= 2.4 and triton; where it cannot run, the graph
    replays the eager UNet with a note.
    """

    enabled: bool = False

    def __post_init__(self) -> None:
        _flag("compile.enabled", self.enabled)


@dataclass(frozen=True)
class SpeedPlan:
    """Everything Speedkit changes for one generation. The default plan changes nothing."""

    attention: AttentionConfig = field(default_factory=AttentionConfig)
    cutoff: GuidanceCutoffConfig = field(default_factory=GuidanceCutoffConfig)
    tome: TokenMergingConfig = field(default_factory=TokenMergingConfig)
    channels_last: ChannelsLastConfig = field(default_factory=ChannelsLastConfig)
    cuda_graph: CudaGraphConfig = field(default_factory=CudaGraphConfig)
    lean_step: LeanStepConfig = field(default_factory=LeanStepConfig)
    mode: str = CUSTOM  # the speed mode these switches came from (a label: the switches are what applies)
    deepcache: DeepCacheConfig = field(default_factory=DeepCacheConfig)
    compile: CompileConfig = field(default_factory=CompileConfig)

    def __post_init__(self) -> None:
        expected = {
            "attention": AttentionConfig,
            "cutoff": GuidanceCutoffConfig,
            "tome": TokenMergingConfig,
            "channels_last": ChannelsLastConfig,
            "cuda_graph": CudaGraphConfig,
            "lean_step": LeanStepConfig,
            "deepcache": DeepCacheConfig,
            "compile": CompileConfig,
        }
        for name, kind in expected.items():
            if not isinstance(getattr(self, name), kind):
                raise PlanError(name, getattr(self, name), f"a {kind.__name__}")
        if self.mode not in MODE_NAMES or self.mode == OFF:
            raise PlanError("mode", self.mode, allowed_choices(m for m in MODE_NAMES if m != OFF))
        if self.compile.enabled and not self.cuda_graph.enabled:
            raise PlanError("compile.enabled", True, COMPILE_NEEDS_GRAPH)

    @property
    def is_noop(self) -> bool:
        """True when the plan changes nothing."""
        return self == SpeedPlan()

    def to_infotext(self) -> dict[str, str]:
        return format_infotext(self)

    @classmethod
    def from_infotext(cls, params: Mapping[str, object]) -> SpeedPlan:
        """Lenient parse (unknown keys and unreadable values are ignored); see parse_infotext."""
        return parse_infotext(params).plan


def _number_text(value: float) -> str:
    """Shortest text that parses back to exactly `value`."""
    return repr(float(value))


def format_infotext(plan: SpeedPlan) -> dict[str, str]:
    """Infotext entries for the non-default parts of `plan` (empty for the no-op plan)."""
    entries: dict[str, str] = {}
    if plan.attention.enabled:
        entries[KEY_ATTENTION] = plan.attention.backend
    if plan.cutoff.enabled:
        entries[KEY_CUTOFF] = f"{plan.cutoff.mode} {_number_text(plan.cutoff.value)}"
    entries.update(_format_tome(plan.tome))
    if plan.channels_last.enabled:
        entries[KEY_CHANNELS_LAST] = "True"
    if plan.cuda_graph.enabled:
        entries[KEY_CUDA_GRAPH] = "True"
    if plan.lean_step.enabled:
        entries[KEY_LEAN_STEP] = "True"
    entries.update(_format_deepcache(plan.deepcache))
    if plan.compile.enabled:
        entries[KEY_COMPILE] = "True"
    if plan.mode != CUSTOM:
        entries[KEY_MODE] = plan.mode
    return entries


def _format_deepcache(deepcache: DeepCacheConfig) -> dict[str, str]:
    if not deepcache.enabled:
        return {}
    entries = {KEY_DEEPCACHE: str(deepcache.interval)}
    for key, value in (
        (KEY_DEEPCACHE_BRANCH, deepcache.branch),
        (KEY_DEEPCACHE_START, deepcache.start),
        (KEY_DEEPCACHE_END, deepcache.end),
        (KEY_DEEPCACHE_HR, deepcache.hr_interval),
    ):
        if value:
            entries[key] = str(value)
    return entries


def _format_tome(tome: TokenMergingConfig) -> dict[str, str]:
    if not tome.enabled:
        return {}
    defaults = TokenMergingConfig(ratio=tome.ratio)
    entries = {KEY_TOME: _number_text(tome.ratio)}
    if tome.hr_ratio:
        entries[KEY_TOME_HR] = _number_text(tome.hr_ratio)
    if tome.max_downsample != defaults.max_downsample:
        entries[KEY_TOME_DOWNSAMPLE] = str(tome.max_downsample)
    if (tome.sx, tome.sy) != (defaults.sx, defaults.sy):
        entries[KEY_TOME_STRIDE] = f"{tome.sx}x{tome.sy}"
    if tome.use_rand:
        entries[KEY_TOME_RANDOM] = "True"
    if tome.seed is not None:
        entries[KEY_TOME_SEED] = str(tome.seed)
    return entries


@dataclass(frozen=True)
class ParsedPlan:
    """Result of parsing infotext: the plan, and what could not be read (never an exception)."""

    plan: SpeedPlan
    problems: tuple[str, ...] = ()


def parse_infotext(params: Mapping[str, object]) -> ParsedPlan:
    """Read a SpeedPlan back from infotext parameters (as A1111's parser returns them).

    Keys that are not Speedkit's, and Speedkit keys this version does not know (from a newer
    version), are ignored. A known key with a value this version cannot use leaves that feature
    at its default and is reported in `problems`.
    """
    problems: list[str] = []
    text = {k: str(v).strip() for k, v in params.items() if isinstance(k, str) and k.startswith(INFOTEXT_PREFIX)}
    attention = _parse_part(problems, KEY_ATTENTION, lambda: _parse_attention(text), AttentionConfig())
    cutoff = _parse_part(problems, KEY_CUTOFF, lambda: _parse_cutoff(text), GuidanceCutoffConfig())
    tome = _parse_part(problems, KEY_TOME, lambda: _parse_tome(text), TokenMergingConfig())
    flags = {
        config: _parse_part(problems, key, lambda k=key, c=config: c(_parse_bool(text.get(k, "False"))), config())
        for key, config in (
            (KEY_CHANNELS_LAST, ChannelsLastConfig),
            (KEY_CUDA_GRAPH, CudaGraphConfig),
            (KEY_LEAN_STEP, LeanStepConfig),
            (KEY_COMPILE, CompileConfig),
        )
    }
    mode = _parse_part(problems, KEY_MODE, lambda: _parse_mode(text), CUSTOM)
    deepcache = _parse_part(problems, KEY_DEEPCACHE, lambda: _parse_deepcache(text), DeepCacheConfig())
    plan = SpeedPlan(
        attention,
        cutoff,
        tome,
        flags[ChannelsLastConfig],
        cuda_graph=flags[CudaGraphConfig],
        lean_step=flags[LeanStepConfig],
        mode=mode,
        deepcache=deepcache,
        compile=_compile_with_graph(problems, flags[CompileConfig], flags[CudaGraphConfig]),
    )
    return ParsedPlan(plan, tuple(problems))


def _compile_with_graph(problems: list[str], compiled: CompileConfig, graph: CudaGraphConfig) -> CompileConfig:
    if compiled.enabled and not graph.enabled:
        problems.append(f"{KEY_COMPILE}: only with {KEY_CUDA_GRAPH}: True")
        return CompileConfig()
    return compiled


def _parse_mode(text: Mapping[str, str]) -> str:
    from .modes import canonical_mode

    value = text.get(KEY_MODE, CUSTOM)
    mode = canonical_mode(value)
    if mode is None or mode == OFF:
        raise ValueError(f"{value!r} is not a speed mode")
    return mode


def _parse_part(problems: list[str], key: str, parse, default):
    try:
        return parse()
    except (ValueError, TypeError) as error:
        problems.append(f"{key}: {error}")
        return default


def _parse_attention(text: Mapping[str, str]) -> AttentionConfig:
    return AttentionConfig(text.get(KEY_ATTENTION, KEEP))


def split_cutoff_text(text: str) -> tuple[str, str | None]:
    """The one reader of cutoff text ("fraction 0.75", "sigma 1.5", "off"): (mode, value text or
    None). Infotext always carries a value; an XYZ axis may give the mode alone (its default)."""
    mode, _, value = text.strip().partition(" ")
    return mode.strip().lower(), (value.strip() or None)


def _parse_cutoff(text: Mapping[str, str]) -> GuidanceCutoffConfig:
    if KEY_CUTOFF not in text:
        return GuidanceCutoffConfig()
    mode, value = split_cutoff_text(text[KEY_CUTOFF])
    return GuidanceCutoffConfig(mode, float(value) if value is not None else math.nan)


def _parse_tome(text: Mapping[str, str]) -> TokenMergingConfig:
    if KEY_TOME not in text:
        return TokenMergingConfig()
    config = TokenMergingConfig(ratio=float(text[KEY_TOME]))
    options: dict[str, object] = {}
    if KEY_TOME_HR in text:
        options["hr_ratio"] = float(text[KEY_TOME_HR])
    if KEY_TOME_DOWNSAMPLE in text:
        options["max_downsample"] = int(text[KEY_TOME_DOWNSAMPLE])
    if KEY_TOME_STRIDE in text:
        sx, _, sy = text[KEY_TOME_STRIDE].lower().partition("x")
        options["sx"], options["sy"] = int(sx), int(sy)
    elif f"{KEY_TOME_STRIDE}-1" in text:  # the WebUI's parser splits any "NxM" value into "-1"/"-2" keys
        options["sx"], options["sy"] = int(text[f"{KEY_TOME_STRIDE}-1"]), int(text[f"{KEY_TOME_STRIDE}-2"])
    if KEY_TOME_RANDOM in text:
        options["use_rand"] = _parse_bool(text[KEY_TOME_RANDOM])
    if KEY_TOME_SEED in text:
        options["seed"] = int(text[KEY_TOME_SEED])
    return replace(config, **options)


def _parse_deepcache(text: Mapping[str, str]) -> DeepCacheConfig:
    if KEY_DEEPCACHE not in text:
        return DeepCacheConfig()
    options = {
        name: int(text[key])
        for name, key in (
            ("branch", KEY_DEEPCACHE_BRANCH),
            ("start", KEY_DEEPCACHE_START),
            ("end", KEY_DEEPCACHE_END),
            ("hr_interval", KEY_DEEPCACHE_HR),
        )
        if key in text
    }
    return DeepCacheConfig(interval=int(text[KEY_DEEPCACHE]), **options)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not True or False")
