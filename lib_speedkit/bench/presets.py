"""Benchmark presets: the Asuka test settings and two more, with validated overrides.

The Asuka test settings come from the NovelAI-leak setup guides (the "Testing accuracy" section of
the voldy guide, a mirror of rentry.org/voldy, and the /h/ NAI guide "Hello Asuka"): prompt and
negative prompt below (the negative has no space after "jpeg artifacts,"), Euler, 28 steps,
CFG 12, seed 2870305590, 512x512, clip skip 2, reference model hash 925997e9 (NovelAI
animefull-final-pruned). ENSD 31337 only affects ancestral/SDE samplers, so it is not needed for
Euler. How the Japanese "アスカベンチ" times its runs was not found in any source, so batch size
and count are editable and every result says what was timed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from ..errors import PlanError, allowed_choices

ASUKA_PROMPT = "masterpiece, best quality, masterpiece, asuka langley sitting cross legged on a chair"
ASUKA_NEGATIVE = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
    "worst quality, low quality, normal quality, jpeg artifacts,signature, watermark, username, blurry, "
    "artist name"
)
ASUKA_MODEL_HASH = "925997e9"

MAX_STEPS = 150
MAX_BATCH = 64
MAX_SIDE = 2048


@dataclass(frozen=True)
class BenchPreset:
    """One benchmark workload. `runs` timed runs follow `warmup` untimed ones."""

    name: str
    prompt: str
    negative_prompt: str
    sampler: str = "Euler"
    scheduler: str = "Automatic"
    steps: int = 28
    cfg_scale: float = 12.0
    seed: int = 2870305590
    width: int = 512
    height: int = 512
    clip_skip: int = 2
    batch_size: int = 1
    batch_count: int = 1
    warmup: int = 1
    runs: int = 3
    reference_model_hash: str | None = None

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1, MAX_STEPS)
        _check_int("width", self.width, 64, MAX_SIDE, multiple_of=8)
        _check_int("height", self.height, 64, MAX_SIDE, multiple_of=8)
        _check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        _check_int("batch_count", self.batch_count, 1, 100)
        _check_int("clip_skip", self.clip_skip, 1, 12)
        _check_int("warmup", self.warmup, 0, 10)
        _check_int("runs", self.runs, 1, 50)
        _check_int("seed", self.seed, 0, 2**32 - 1)
        if (
            isinstance(self.cfg_scale, bool)
            or not isinstance(self.cfg_scale, (int, float))
            or not 1 <= self.cfg_scale <= 30
        ):
            raise PlanError("cfg_scale", self.cfg_scale, "a number from 1 to 30")
        for name in ("prompt", "negative_prompt", "sampler", "scheduler"):
            if not isinstance(getattr(self, name), str):
                raise PlanError(name, getattr(self, name), "a string")

    @property
    def images_per_run(self) -> int:
        return self.batch_size * self.batch_count

    def with_overrides(self, overrides: Mapping[str, object]) -> BenchPreset:
        """A copy with some fields changed; unknown fields and bad values raise PlanError."""
        allowed = {f.name for f in fields(self)} - {"name"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise PlanError(unknown[0], overrides[unknown[0]], allowed_choices(sorted(allowed)))
        return replace(self, **{k: _coerce(k, v) for k, v in overrides.items()})

    def as_dict(self) -> dict:
        return asdict(self)


def _check_int(name: str, value: object, low: int, high: int, multiple_of: int = 1) -> None:
    allowed = f"an integer from {low} to {high}" + (f", a multiple of {multiple_of}" if multiple_of > 1 else "")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or value % multiple_of:
        raise PlanError(name, value, allowed)


def _coerce(name: str, value: object) -> object:
    """JSON/CLI values: integral floats and numeric strings for the numeric fields."""
    kind = {f.name: f.type for f in fields(BenchPreset)}[name]
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and kind in ("int", "float"):
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError:
            return value  # validation names the field
    return value


PRESETS: dict[str, BenchPreset] = {
    preset.name: preset
    for preset in (
        BenchPreset("Asuka test", ASUKA_PROMPT, ASUKA_NEGATIVE, reference_model_hash=ASUKA_MODEL_HASH),
        BenchPreset("SD1.5 quick", ASUKA_PROMPT, ASUKA_NEGATIVE, steps=20, cfg_scale=7.0, clip_skip=1),
        BenchPreset(
            "SDXL 1024²", ASUKA_PROMPT, ASUKA_NEGATIVE, steps=28, cfg_scale=7.0, width=1024, height=1024, clip_skip=1
        ),
    )
}


def get_preset(name: str, overrides: Mapping[str, object] | None = None) -> BenchPreset:
    """The named preset with overrides applied; PlanError for an unknown name or bad override."""
    if name not in PRESETS:
        raise PlanError("preset", name, allowed_choices(PRESETS))
    return PRESETS[name].with_overrides(overrides or {})
