"""Runner (fake generator), history file robustness, community baselines (matching, like with like)."""

import json
from pathlib import Path

import numpy as np
import pytest

from lib_speedkit.bench import baselines
from lib_speedkit.bench.history import History, to_csv, to_json
from lib_speedkit.bench.presets import get_preset
from lib_speedkit.bench.runner import MatrixEntry, RunMeasurement, run_benchmark, run_matrix
from lib_speedkit.bench.telemetry import TelemetrySampler
from lib_speedkit.plan import SpeedPlan, TokenMergingConfig

PRESET = get_preset("Asuka test", {"runs": 3, "warmup": 1, "steps": 20})
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "sd-data-benchmarks.jsonl"


class FakeGenerator:
    """Scripted generations: 0.5 s sampling, 0.8 s total; an image per plan; optional interrupt."""

    def __init__(self, interrupt_at=None):
        self.calls = []
        self.interrupt_at = interrupt_at

    def __call__(self, preset, plan):
        self.calls.append(plan)
        level = 0 if plan is None else 40 if plan.tome.enabled else 0
        image = np.full((8, 8, 3), level, np.uint8)
        return RunMeasurement(
            sampler_seconds=0.5,
            total_seconds=0.8,
            time_taken_seconds=0.9,
            vram_mb={"active_peak_mb": 100.0 + len(self.calls), "reserved_peak_mb": 200.0},
            first_image=image,
            sampling_windows=[(0.0, 0.5)],
            interrupted=self.interrupt_at is not None and len(self.calls) >= self.interrupt_at,
        )


def sampler():
    return TelemetrySampler(None, unavailable="no NVIDIA GPU")


def test_runner_warms_up_then_times_and_summarises():
    generator = FakeGenerator()
    result = run_benchmark(generator, PRESET, None, sampler())
    assert len(generator.calls) == 4 and len(result["runs"]) == 3
    assert result["speed"]["sampler_its"]["median"] == pytest.approx(20 / 0.5)
    assert result["speed"]["end_to_end_its"]["median"] == pytest.approx(20 / 0.8)
    assert result["speed"]["time_taken_s"]["median"] == pytest.approx(0.9)
    assert result["vram"]["active_peak_mb"] == 104.0  # the highest peak of the timed runs
    assert result["diagnosis"]["verdict"] == "unknown" and not result["interrupted"]


def test_each_run_records_its_image_digest_and_the_graph_claim():
    """A history can tell bit-identical runs apart without keeping images: equal digests, equal pixels."""
    plain = run_benchmark(FakeGenerator(), PRESET, None, sampler())
    merged = run_benchmark(FakeGenerator(), PRESET, SpeedPlan(tome=TokenMergingConfig(ratio=0.5)), sampler())
    digests = {run["image_sha256"] for run in plain["runs"]}
    assert len(digests) == 1 and None not in digests
    assert merged["runs"][0]["image_sha256"] not in digests  # the fake's ToMe image differs
    assert plain["runs"][0]["cuda_graph"] is None and plain["runs"][0]["notes"] == []
    assert plain["runs"][0]["deepcache"] is None


def test_each_run_records_the_full_and_shallow_unet_calls_of_deepcache():
    def generate(preset, plan):
        measurement = FakeGenerator()(preset, plan)
        measurement.info["speedkit"] = {"deepcache": {"full": 10, "shallow": 18}}
        return measurement

    result = run_benchmark(generate, PRESET, SpeedPlan(), sampler())
    assert [run["deepcache"] for run in result["runs"]] == [{"full": 10, "shallow": 18}] * len(result["runs"])


def test_an_interrupt_keeps_the_completed_runs_and_says_so():
    result = run_benchmark(FakeGenerator(interrupt_at=3), PRESET, None, sampler())
    assert result["interrupted"] and len(result["runs"]) == 2
    assert result["speed"]["sampler_its"]["n"] == 1  # the interrupted run is not summarised
    assert result["notes"][0].startswith("interrupted")


def test_matrix_alternates_order_and_compares_images_with_the_baseline():
    generator = FakeGenerator()
    entries = [MatrixEntry("baseline", None), MatrixEntry("tome", SpeedPlan(tome=TokenMergingConfig(ratio=0.5)))]
    matrix = run_matrix(generator, PRESET, entries, sampler())
    timed = generator.calls[2:]
    assert [p is None for p in timed] == [True, False, False, True, True, False]  # A B, B A, A B
    rows = {row["label"]: row for row in matrix["rows"]}
    assert rows["baseline"]["speedup"] == 1.0 and rows["baseline"]["vs_baseline"]["identical"]
    assert rows["tome"]["vs_baseline"]["max_abs"] == 40 and rows["tome"]["run_to_run"]["identical"]
    assert rows["tome"]["speedkit"] == {"Speedkit ToMe": "0.5"}


def test_matrix_rows_take_notes_and_captures_from_the_generation_record_whole():
    """A note may contain ", " (infotext's separator): it comes from the record, not the infotext."""
    note = "CUDA graph not used for this pass: the WebUI runs on cpu, CUDA graphs need a CUDA device"
    record = {"notes": [note, "lean step off, for a reason"], "cuda_graph": {"captures": 2}}

    def generate(preset, plan):
        measurement = FakeGenerator()(preset, plan)
        if plan is not None:
            measurement.info["speedkit"] = record
        return measurement

    entries = [MatrixEntry("baseline", None), MatrixEntry("graph", SpeedPlan())]
    rows = {row["label"]: row for row in run_matrix(generate, PRESET, entries, sampler())["rows"]}
    assert rows["graph"]["notes"] == f"{note}; lean step off, for a reason"
    assert rows["graph"]["graph_captures"] == [2, 2, 2] and rows["baseline"]["graph_captures"] == [None] * 3


def test_history_survives_corrupt_lines_and_exports(tmp_path):
    history = History(tmp_path / "speedkit" / "bench-history.jsonl")
    history.append({"label": "a", "speed": {"sampler_its": {"median": 20.0}}})
    with open(history.path, "a") as handle:
        handle.write('{"label": "half a line\n[1, 2]\n\n')
    history.append({"label": "b", "preset": {"name": "Asuka test", "steps": 28}})
    read = history.read()
    assert [r["label"] for r in read.results] == ["a", "b"] and read.skipped_lines == 2
    assert all(r["schema"] == 1 for r in read.results)
    csv_text = to_csv(read.results)
    assert csv_text.splitlines()[0].startswith("timestamp,label,preset") and ",20.0," in csv_text
    assert json.loads(to_json(read.results))[1]["preset"]["steps"] == 28
    assert History(tmp_path / "missing.jsonl").read().results == []


@pytest.mark.parametrize(
    ("name", "normalised", "family"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx 4090", "rtx 4090"),
        ("NVIDIA H100 80GB HBM3", "h100 80gb hbm3", "h100"),
        ("NVIDIA A100-SXM4-80GB", "a100 sxm4 80gb", "a100"),
        ("AMD Radeon RX 7900 XTX", "rx 7900 xtx", "rx 7900 xtx"),
    ],
)
def test_gpu_names_normalise(name, normalised, family):
    assert baselines.normalise_gpu_name(name) == normalised
    assert baselines.gpu_family(normalised) == family


@pytest.mark.parametrize(
    ("gpu", "how", "shown"),
    [
        ("NVIDIA GeForce RTX 4090", "exact", "NVIDIA GeForce RTX 4090"),
        ("NVIDIA H100 80GB HBM3", "same family", "NVIDIA H100 PCIe"),
        ("NVIDIA H200", "nearest class", "NVIDIA H100 PCIe"),
        ("Imaginary GPU 9000", "none", None),
    ],
)
def test_gpu_matching(gpu, how, shown):
    match = baselines.find_gpu(gpu)
    assert (match.how, match.gpu) == (how, shown)


def _result(width=512, batch=1, its=25.0):
    preset = get_preset("Asuka test", {"width": width, "height": width, "batch_size": batch}).as_dict()
    return {"preset": preset, "speed": {"end_to_end_its": {"median": its}}}


def test_comparison_is_end_to_end_at_the_same_batch_with_definitions_spelled_out():
    comparison = baselines.compare_with_baselines(_result(), "NVIDIA GeForce RTX 4090", model_is_sd1=True)
    assert comparison["status"] == "ok"
    row = next(r for r in comparison["rows"] if r["era"] == "sysinfo-2023")
    assert (row["median_its"], row["batch_size"]) == (19.89, 1) and row["n"] > 2000
    assert row["ratio"] == pytest.approx(25.0 / 19.89)
    assert "Euler a, 20 steps, CFG 15" in row["definition"]
    assert "Euler, 28 steps, CFG 12" in comparison["ours"]


@pytest.mark.parametrize(
    ("result", "gpu", "sd1", "status"),
    [
        (_result(width=1024), "NVIDIA GeForce RTX 4090", True, "not comparable"),
        (_result(), "NVIDIA GeForce RTX 4090", False, "not comparable"),
        (_result(batch=3), "NVIDIA GeForce RTX 4090", True, "not comparable"),
        (_result(), "Imaginary GPU 9000", True, "no baseline"),
        (_result(), None, True, "no baseline"),
    ],
)
def test_no_comparison_where_definitions_differ(result, gpu, sd1, status):
    assert baselines.compare_with_baselines(result, gpu, model_is_sd1=sd1)["status"] == status


def test_shipped_table_names_its_source_and_published_figures():
    table = baselines.load_table()
    assert "vladmandic/sd-data" in table["source"] and set(table["definitions"]) == {"sysinfo-2023", "sysinfo-2025"}
    stable_fast = [f for f in baselines.published_figures() if f["software"].startswith("stable-fast")]
    assert any(f["gpu"] == "H100" and f["its"] == 104.6 for f in stable_fast)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="shared/baselines is not beside this checkout")
def test_the_shipped_table_is_what_the_build_script_makes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "baselines.json"
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, str(root / "benchmarks" / "build_baselines.py"), str(SHARED_DATA), str(out)],
        check=True,
        capture_output=True,
    )
    assert json.loads(out.read_text()) == baselines.load_table()
