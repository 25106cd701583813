"""Slimming a checkpoint: config, the key plan, the streaming conversion and its report."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import PlanError, allowed_choices
from . import keys as key_rules
from .safetensors_io import SlimError, TensorInfo, atomic_output, nbytes, write_stream
from .sources import Checkpoint, open_checkpoint

TARGET_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "keep": None}
CONVERTIBLE = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
FP16_MAX = 65504.0
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
METADATA_KEY = "speedkit_slim"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SlimConfig:
    """What slimming does. Quality: fp16 rounds each weight to 11 significant bits (the WebUI runs
    in fp16 anyway unless --no-half); bf16 keeps fp32's range with 8 bits (coarser than fp16).
    Memory: one tensor at a time (about twice the largest tensor), whatever the checkpoint's size.

    dtype: "fp16" | "bf16" | "keep" (floating tensors; others are never changed)
    prune: drop EMA copies and dead duplicates (lib_speedkit.slim.keys lists the rules)
    vae: path of a VAE to bake in (replaces first_stage_model.*), or None
    keep_vae: False drops first_stage_model.* (the WebUI then needs a VAE selected in Settings)
    overwrite: replace an existing output file
    allow_unsafe_pickle: unpickle .ckpt/.pt files that need more than tensors (runs their code)
    suffix: appended to the input's name: model.ckpt -> model<suffix>.safetensors
    """

    dtype: str = "fp16"
    prune: bool = True
    vae: str | None = None
    keep_vae: bool = True
    overwrite: bool = False
    allow_unsafe_pickle: bool = False
    suffix: str = "-slim"

    def __post_init__(self) -> None:
        if self.dtype not in TARGET_DTYPES:
            raise PlanError("dtype", self.dtype, allowed_choices(TARGET_DTYPES))
        for name in ("prune", "keep_vae", "overwrite", "allow_unsafe_pickle"):
            if not isinstance(getattr(self, name), bool):
                raise PlanError(name, getattr(self, name), "true or false")
        if self.vae is not None and (not isinstance(self.vae, str) or not self.vae):
            raise PlanError("vae", self.vae, "the path of a VAE file, or none")
        if self.vae and not self.keep_vae:
            raise PlanError("keep_vae", self.keep_vae, "true when a VAE is baked in (baking replaces the VAE)")
        if not isinstance(self.suffix, str) or not SUFFIX_PATTERN.match(self.suffix) or ".." in self.suffix:
            raise PlanError("suffix", self.suffix, "1-64 characters of A-Z a-z 0-9 . _ + - (no '..', no '/')")


def output_path(source: Path, suffix: str, folder: Path | None = None) -> Path:
    """`<folder>/<source stem><suffix>.safetensors` (folder: beside the source by default)."""
    return (folder or source.parent) / (source.stem + suffix + ".safetensors")


@dataclass(frozen=True)
class Entry:
    """One output tensor: where it comes from and the dtype it is written in."""

    name: str
    source: TensorInfo
    dtype: torch.dtype


@dataclass
class KeyPlan:
    architecture: key_rules.Architecture
    entries: list[Entry]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> keys
    added: list[str] = field(default_factory=list)  # keys that were not in the input (baked VAE)


def target_dtype(key: str, dtype: torch.dtype, config: SlimConfig) -> torch.dtype:
    target = TARGET_DTYPES[config.dtype]
    if target is None or dtype not in CONVERTIBLE or key_rules.keeps_dtype(key):
        return dtype
    return target


def vae_tensors(vae: Checkpoint) -> dict[str, TensorInfo]:
    """A VAE file's tensors under first_stage_model.* (bare or prefixed keys, loss/EMA skipped)."""
    tensors = {}
    for key, info in vae.tensors.items():
        name = key_rules.vae_key(key)
        if name is not None:
            tensors[name] = info
    if not tensors:
        raise SlimError(f"vae: {vae.path.name} has no VAE weights")
    return tensors


def _check_vae_fits(baked: dict[str, TensorInfo], current: dict[str, TensorInfo], arch) -> None:
    if not current:
        return
    if set(baked) != set(current):
        missing = sorted(set(current) - set(baked))[:3]
        extra = sorted(set(baked) - set(current))[:3]
        raise SlimError(f"vae: does not fit this {arch.name} checkpoint (missing {missing}, unexpected {extra})")
    for key, info in baked.items():
        if info.shape != current[key].shape:
            raise SlimError(
                f"vae: does not fit this {arch.name} checkpoint ({key} is {info.shape}, needs {current[key].shape})"
            )


def plan_keys(checkpoint: Checkpoint, config: SlimConfig, vae: Checkpoint | None = None) -> KeyPlan:
    """Which keys go into the output, in which dtype, and why each other key was dropped."""
    shapes = {key: info.shape for key, info in checkpoint.tensors.items()}
    arch = key_rules.detect_architecture(shapes)
    plan = KeyPlan(arch, [])
    current_vae = {k: v for k, v in checkpoint.tensors.items() if k.startswith(key_rules.VAE)}
    baked = vae_tensors(vae) if vae is not None else None
    if baked is not None:
        _check_vae_fits(baked, current_vae, arch)
    sources = dict(checkpoint.tensors)
    for key in checkpoint.tensors:
        reason = key_rules.drop_reason(key, arch, checkpoint.tensors, config.prune)
        if reason is None and key.startswith(key_rules.VAE):
            reason = (
                "VAE replaced by the baked one" if baked is not None else None if config.keep_vae else "VAE dropped"
            )
        if reason is not None:
            plan.dropped.setdefault(reason, []).append(key)
            del sources[key]
    plan.dropped = {reason: sorted(dropped) for reason, dropped in plan.dropped.items()}
    if baked is not None:
        plan.added = sorted(set(baked) - set(current_vae))
        sources.update(baked)
    for key in sorted(sources):
        info = sources[key]
        plan.entries.append(Entry(key, info, target_dtype(key, info.dtype, config)))
    _check_detection_keys(shapes, {e.name for e in plan.entries})
    return plan


def _check_detection_keys(before, after: set[str]) -> None:
    lost = [key for key in key_rules.DETECTION_KEYS if key in before and key not in after]
    if lost:
        raise SlimError(f"internal error: slimming would drop {lost}, which the WebUI reads to recognise the model")


@dataclass
class SlimReport:
    """What a conversion did; `as_dict()` is what the tab, the CLI (--json) and the API show."""

    source: str
    output: str
    architecture: str
    config: dict
    size_before: int
    size_after: int
    keys_before: int
    keys_after: int
    dropped: dict[str, list[str]]
    added: list[str]
    skipped: list[str]
    converted: dict[str, int]  # "float32 -> float16": count
    overflow: list[str]  # tensors with values beyond fp16's range (inf after conversion)
    yaml: str | None
    seconds: float
    peak_rss_mb: float | None
    largest_tensor_mb: float
    checks: dict = field(default_factory=dict)  # filled by hosts: load test, image difference, load speed

    def as_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB (over its whole life), or None where the
    platform does not tell. `resource` exists only on POSIX: imported here, never at import time."""
    try:
        import resource
    except ImportError:
        return _peak_working_set_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB, macOS: bytes
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _peak_working_set_mb() -> float | None:
    """Windows: psutil's peak working set (installed with the extension), else None."""
    try:
        import psutil
    except ImportError:
        return None
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)
    return peak / 2**20 if peak else None


def _convert(entry: Entry, overflow: list[str]):
    tensor = entry.source.load()
    if entry.dtype == torch.float16 and tensor.dtype in (torch.float32, torch.float64, torch.bfloat16):
        if tensor.numel():  # aminmax: no full-size temporary (abs() would copy the tensor)
            low, high = torch.aminmax(tensor)
            if max(float(high), -float(low)) > FP16_MAX and torch.isfinite(low) and torch.isfinite(high):
                overflow.append(entry.name)
    return tensor.to(entry.dtype)


def write_checkpoint(plan: KeyPlan, target: Path, metadata: dict[str, str], overwrite: bool) -> list[str]:
    """Stream the plan's tensors into `target` (atomically); returns the keys that overflow fp16."""
    by_name = {entry.name: entry for entry in plan.entries}
    items = [(e.name, e.dtype, e.source.shape) for e in plan.entries]
    needed = sum(nbytes(e.dtype, e.source.shape) for e in plan.entries)
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise SlimError(
            f"output: {target.parent} has {free / 2**20:.0f} MB free, the output needs {needed / 2**20:.0f} MB"
        )
    overflow: list[str] = []
    with atomic_output(target, overwrite) as file:
        write_stream(file, items, lambda name: _convert(by_name[name], overflow), metadata)
    return overflow


def slim_metadata(checkpoint: Checkpoint, plan: KeyPlan, config: SlimConfig) -> dict[str, str]:
    """The input's own safetensors metadata plus one `speedkit_slim` key recording what was done."""
    record = {
        "version": FORMAT_VERSION,
        "source": checkpoint.path.name,
        "source_bytes": checkpoint.path.stat().st_size,
        "architecture": plan.architecture.name,
        "dtype": config.dtype,
        "pruned": config.prune,
        "dropped_keys": {reason: len(keys) for reason, keys in sorted(plan.dropped.items())},
        "vae_baked": Path(config.vae).name if config.vae else None,
        "vae_kept": config.keep_vae,
    }
    metadata = {k: v for k, v in checkpoint.metadata.items() if k != METADATA_KEY}
    metadata[METADATA_KEY] = json.dumps(record, sort_keys=True)
    return metadata


def copy_yaml(source: Path, target: Path, overwrite: bool) -> Path | None:
    """The WebUI takes a checkpoint's config from `<name>.yaml` beside it: give the output one too."""
    config = source.with_suffix(".yaml")
    if not config.is_file():
        return None
    destination = target.with_suffix(".yaml")
    with atomic_output(destination, overwrite) as file:
        file.write(config.read_bytes())
    return destination


def check_output_free(target: Path, config: SlimConfig, source: Path) -> None:
    if target.resolve() == source.resolve():
        raise PlanError("suffix", config.suffix, "a suffix that gives a new file name")
    for path in (target, target.with_suffix(".yaml") if source.with_suffix(".yaml").is_file() else None):
        if path is not None and path.exists() and not config.overwrite:
            raise SlimError(f"output: {path} exists; choose another suffix or allow overwriting (overwrite)")


def slim_checkpoint(
    source: str | Path, config: SlimConfig, output_folder: Path | None = None, torch_load: Callable = torch.load
) -> SlimReport:
    """Convert `source` into a new slim safetensors file in `output_folder` (default: beside the
    source); returns the report. `torch_load`: PyTorch's own loader (see sources.open_checkpoint).

    Raises PlanError / SlimError (naming the option or file) before anything is written; a failure
    or interruption while writing leaves no output file behind.
    """
    started = time.perf_counter()
    source = Path(source)
    checkpoint = open_checkpoint(source, config.allow_unsafe_pickle, "input", torch_load)
    target = output_path(source, config.suffix, output_folder)
    check_output_free(target, config, source)
    vae = open_checkpoint(config.vae, config.allow_unsafe_pickle, "vae", torch_load) if config.vae else None
    plan = plan_keys(checkpoint, config, vae)
    overflow = write_checkpoint(plan, target, slim_metadata(checkpoint, plan, config), config.overwrite)
    yaml = copy_yaml(source, target, config.overwrite)
    converted = Counter(
        f"{str(e.source.dtype).removeprefix('torch.')} -> {str(e.dtype).removeprefix('torch.')}"
        for e in plan.entries
        if e.source.dtype != e.dtype
    )
    return SlimReport(
        source=str(source),
        output=str(target),
        architecture=plan.architecture.name,
        config=asdict(config),
        size_before=source.stat().st_size,
        size_after=target.stat().st_size,
        keys_before=len(checkpoint.tensors),
        keys_after=len(plan.entries),
        dropped=plan.dropped,
        added=plan.added,
        skipped=checkpoint.skipped,
        converted=dict(sorted(converted.items())),
        overflow=overflow,
        yaml=str(yaml) if yaml else None,
        seconds=time.perf_counter() - started,
        peak_rss_mb=peak_rss_mb(),
        largest_tensor_mb=max((e.source.nbytes for e in plan.entries), default=0) / 2**20,
    )
