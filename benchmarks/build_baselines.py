"""Build lib_speedkit/bench/data/baselines.json from the community benchmark records.

Input: shared/baselines/sd-data-benchmarks.jsonl (System Info extension results, normalised from
vladmandic/sd-data; see shared/baselines/README.md). Kept: SD1.x at 512x512 (2023 rows: model name
without "xl"; 2025+ rows: an SD1 pipeline with width and height 512), it/s in (0, 300] (the
extension itself rejects more). Per normalised GPU name, era and batch size: median, p90, n.
Also merges the published single-point figures of benchmarks/published_figures.json.

    python benchmarks/build_baselines.py [INPUT.jsonl] [OUTPUT.json]
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_speedkit.bench.baselines import normalise_gpu_name  # noqa: E402
from lib_speedkit.bench.stats import percentile  # noqa: E402

DEFAULT_INPUT = ROOT.parent / "shared" / "baselines" / "sd-data-benchmarks.jsonl"
DEFAULT_OUTPUT = ROOT / "lib_speedkit" / "bench" / "data" / "baselines.json"
PUBLISHED = Path(__file__).with_name("published_figures.json")
MIN_SAMPLES = 3
SD1_PIPELINES = {"LatentDiffusion", "StableDiffusionPipeline", "StableDiffusion"}

DEFINITIONS = {
    "sysinfo-2023": "System Info extension, 2023 snapshot: END-TO-END it/s (steps x batch / whole generation, "
    "text encoder and VAE decode included), Euler a, 20 steps, CFG 15, 512x512, a fixed steampunk prompt, "
    "model not enforced, one run per batch size",
    "sysinfo-2025": "System Info extension, 2025-01..2026-01: END-TO-END it/s, 512x512 SD1.x, steps 10/20/50 not "
    "recorded, sampler not forced since 2025-09 (Euler a before), mixed apps (A1111, Forge, SD.Next)",
}


def era_of(record: dict) -> str:
    return "sysinfo-2023" if "2023" in record["source"] else "sysinfo-2025"


def is_sd1_512(record: dict) -> bool:
    model = record["model"]
    if era_of(record) == "sysinfo-2023":
        return "xl" not in model.lower()
    pipeline = re.search(r"pipeline:(\S+)", model)
    size = re.search(r"width:(\d+) height:(\d+)", model)
    return bool(pipeline and pipeline.group(1) in SD1_PIPELINES and size and size.groups() == ("512", "512"))


def gpu_of(record: dict) -> str | None:
    match = re.match(r"device:(.+?) \(\d+\)", record["device"])
    return match.group(1).strip() if match else None


def speeds_by_batch(record: dict) -> dict[int, float]:
    speeds = {}
    for index, text in enumerate(record["its"].split("/")):
        try:
            value = float(text)
        except ValueError:
            continue
        if 0 < value <= 300:
            speeds[2**index] = value
    return speeds


def build(records: list[dict]) -> dict:
    samples: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    display: dict[str, str] = {}
    for record in records:
        gpu = gpu_of(record)
        if not gpu or not is_sd1_512(record):
            continue
        key = normalise_gpu_name(gpu)
        display.setdefault(key, gpu)
        for batch, value in speeds_by_batch(record).items():
            samples[(key, era_of(record))][batch].append(value)
    gpus: dict[str, dict] = {}
    for (key, era), by_batch in sorted(samples.items()):
        entries = {
            str(batch): {
                "median": round(statistics.median(values), 2),
                "p90": round(percentile(values, 90), 2),
                "n": len(values),
            }
            for batch, values in sorted(by_batch.items())
            if len(values) >= MIN_SAMPLES
        }
        if entries:
            gpus.setdefault(key, {"display": display[key], "entries": {}})["entries"][era] = entries
    return gpus


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_INPUT
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = {
        "source": (
            "vladmandic/sd-data: community results of the System Info extension "
            "(vladmandic/sd-extension-system-info), pages/benchmark-data.json @88b88cf6 (2023-08-11) "
            f"and input/benchmark-raw-2025-01..2026-01.json @7e130251; {len(records)} records before filtering"
        ),
        "built_by": "benchmarks/build_baselines.py",
        "min_samples": MIN_SAMPLES,
        "definitions": DEFINITIONS,
        "gpus": build(records),
        "published": json.loads(PUBLISHED.read_text(encoding="utf-8")),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(table, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(table['gpus'])} GPUs -> {output}")


if __name__ == "__main__":
    main(sys.argv)
