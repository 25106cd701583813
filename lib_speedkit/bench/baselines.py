"""Community baselines: match the user's GPU and compare like with like, offline.

The data file (data/baselines.json) is built by benchmarks/build_baselines.py from the System Info
extension's community results (vladmandic/sd-data; see its `source`). Those numbers are END-TO-END
it/s (steps x batch / whole generation), SD1.x at 512x512, with other sampler/steps/CFG than ours,
so only our end-to-end it/s at the same batch size and 512x512 is set beside them, always with
the difference in definition spelled out. No network access.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("data") / "baselines.json"
_VENDOR_WORDS = ("nvidia", "geforce", "amd", "radeon", "intel", "(r)", "(tm)", "graphics")
NEAREST_CLASS = {"h200": "h100", "gh200": "h100", "h800": "h100", "a800": "a100"}
"""GPU families without community data of their own -> the closest family that has some."""
_VARIANT_WORDS = re.compile(r"\b(\d+\s?gb|pcie|sxm\d?|hbm\d?e?|nvl|laptop gpu|mobile|\[zluda\])\b")


def normalise_gpu_name(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx 4090'; 'NVIDIA H100 80GB HBM3' -> 'h100 80gb hbm3'."""
    text = name.lower().replace("-", " ")
    for word in _VENDOR_WORDS:
        text = text.replace(word, " ")
    return " ".join(text.split())


def gpu_family(normalised: str) -> str:
    """The name without memory size and form factor: 'h100 80gb hbm3' -> 'h100'."""
    return " ".join(_VARIANT_WORDS.sub(" ", normalised).split())


@lru_cache(maxsize=1)
def load_table(path: Path = DATA_FILE) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@dataclass(frozen=True)
class BaselineMatch:
    gpu: str | None  # the baseline's GPU name as shown
    how: str  # "exact" | "same family" | "nearest class" | "none"
    entries: dict  # era -> batch -> {median, p90, n}


def find_gpu(gpu_name: str, table: dict | None = None) -> BaselineMatch:
    table = table or load_table()
    gpus = table["gpus"]
    key = normalise_gpu_name(gpu_name)
    if key in gpus:
        return BaselineMatch(gpus[key]["display"], "exact", gpus[key]["entries"])
    family = gpu_family(key)
    for how, wanted in (("same family", family), ("nearest class", NEAREST_CLASS.get(family))):
        relatives = [k for k in gpus if wanted and gpu_family(k) == wanted]
        if relatives:
            best = max(relatives, key=lambda k: _samples(gpus[k]))
            return BaselineMatch(gpus[best]["display"], how, gpus[best]["entries"])
    return BaselineMatch(None, "none", {})


def _samples(gpu: dict) -> int:
    return sum(batch["n"] for era in gpu["entries"].values() for batch in era.values())


def compare_with_baselines(result: dict, gpu_name: str | None, model_is_sd1: bool, table: dict | None = None) -> dict:
    """The comparison shown with a result: only where the definitions can be compared."""
    table = table or load_table()
    preset = result.get("preset", {})
    if not gpu_name:
        return {"status": "no baseline", "reason": "no GPU was detected"}
    match = find_gpu(gpu_name, table)
    if match.how == "none":
        return {"status": "no baseline", "reason": f"no community results for {gpu_name}"}
    if (preset.get("width"), preset.get("height")) != (512, 512) or not model_is_sd1:
        return {"status": "not comparable", "reason": "community results are SD1.x at 512x512 only", "gpu": match.gpu}
    ours = (result.get("speed") or {}).get("end_to_end_its", {}).get("median")
    batch = str(preset.get("batch_size", 1))
    rows = []
    for era, by_batch in match.entries.items():
        if batch in by_batch and ours:
            base = by_batch[batch]
            rows.append(
                {
                    "era": era,
                    "definition": table["definitions"][era],
                    "batch_size": int(batch),
                    "median_its": base["median"],
                    "p90_its": base["p90"],
                    "n": base["n"],
                    "yours_its": ours,
                    "ratio": ours / base["median"],
                }
            )
    if not rows:
        return {"status": "not comparable", "reason": f"no community results at batch size {batch}", "gpu": match.gpu}
    ours_definition = (
        f"yours: end-to-end, {preset.get('sampler')}, {preset.get('steps')} steps, CFG {preset.get('cfg_scale')}"
    )
    return {"status": "ok", "gpu": match.gpu, "match": match.how, "ours": ours_definition, "rows": rows}


def published_figures(table: dict | None = None) -> list[dict]:
    """Published single-point figures (engines, papers) with their conditions and sources."""
    return (table or load_table()).get("published", [])
