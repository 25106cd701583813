"""Benchmark history: one JSON object per line in a file under the WebUI's data dir.

Every line carries `schema`; a line that cannot be read (a crash mid-write, a hand edit) is
skipped and counted, never fatal. Export as CSV (flat columns) or JSON. Nothing is uploaded.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
CSV_COLUMNS = (
    "timestamp",
    "label",
    "preset",
    "gpu",
    "model_hash",
    "width",
    "height",
    "steps",
    "batch_size",
    "batch_count",
    "attention",
    "speedkit",
    "sampler_its_median",
    "sampler_its_min",
    "sampler_its_max",
    "end_to_end_its_median",
    "time_taken_s_median",
    "gpu_util_mean",
    "vram_active_peak_mb",
    "vram_reserved_peak_mb",
    "vram_system_peak_mb",
    "interrupted",
)


@dataclass
class HistoryRead:
    results: list[dict] = field(default_factory=list)
    skipped_lines: int = 0


class History:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def append(self, result: Mapping) -> None:
        """Append one result (a JSON-serialisable mapping) as one line, flushed to disk."""
        line = json.dumps({"schema": SCHEMA_VERSION, **result}, ensure_ascii=False, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> HistoryRead:
        read = HistoryRead()
        if not self.path.exists():
            return read
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    read.skipped_lines += 1
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("schema"), int):
                    read.skipped_lines += 1
                    continue
                read.results.append(entry)
        return read


def flat_row(result: Mapping) -> dict[str, object]:
    """The CSV columns of one result (missing values are empty)."""

    def get(*path, default=""):
        node = result
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                return default
            node = node[key]
        return node

    preset = get("preset", default={}) or {}
    return {
        "timestamp": get("timestamp"),
        "label": get("label"),
        "preset": preset.get("name", "") if isinstance(preset, Mapping) else "",
        "gpu": get("environment", "gpu", "name"),
        "model_hash": get("environment", "model", "hash"),
        "width": preset.get("width", "") if isinstance(preset, Mapping) else "",
        "height": preset.get("height", "") if isinstance(preset, Mapping) else "",
        "steps": preset.get("steps", "") if isinstance(preset, Mapping) else "",
        "batch_size": preset.get("batch_size", "") if isinstance(preset, Mapping) else "",
        "batch_count": preset.get("batch_count", "") if isinstance(preset, Mapping) else "",
        "attention": get("environment", "attention"),
        "speedkit": json.dumps(get("speedkit", default={}), sort_keys=True),
        "sampler_its_median": get("speed", "sampler_its", "median"),
        "sampler_its_min": get("speed", "sampler_its", "min"),
        "sampler_its_max": get("speed", "sampler_its", "max"),
        "end_to_end_its_median": get("speed", "end_to_end_its", "median"),
        "time_taken_s_median": get("speed", "time_taken_s", "median"),
        "gpu_util_mean": get("telemetry", "metrics", "utilisation_percent", "mean"),
        "vram_active_peak_mb": get("vram", "active_peak_mb"),
        "vram_reserved_peak_mb": get("vram", "reserved_peak_mb"),
        "vram_system_peak_mb": get("vram", "system_peak_mb"),
        "interrupted": get("interrupted", default=False),
    }


def to_csv(results: Iterable[Mapping]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for result in results:
        writer.writerow(flat_row(result))
    return buffer.getvalue()


def to_json(results: Iterable[Mapping]) -> str:
    return json.dumps(list(results), indent=2, ensure_ascii=False, sort_keys=True)
