"""Tier 2: the benchmark in a live WebUI through POST /speedkit/v1/bench."""

from __future__ import annotations

import json
import threading
import time

import pytest
from harness import http_json
from helpers import assert_restored, post, status

TINY = {"steps": 4, "width": 64, "height": 64, "runs": 2, "warmup": 1}


def bench(server, **body) -> dict:
    code, result = post(server, "/speedkit/v1/bench", {"preset": "Asuka test", "overrides": TINY, **body})
    assert code == 200, result
    return result


def test_a_bench_returns_a_complete_result_and_is_stored(webui, pristine):
    result = bench(webui, label="tiny")
    assert result["preset"]["name"] == "Asuka test" and result["preset"]["steps"] == 4
    assert len(result["runs"]) == 2 and not result["interrupted"]
    for metric in ("sampler_its", "end_to_end_its", "time_taken_s", "seconds_per_image"):
        assert result["speed"][metric]["n"] == 2 and result["speed"][metric]["median"] > 0
    assert result["speed"]["sampler_its"]["median"] > result["speed"]["end_to_end_its"]["median"]
    assert "NVML" in result["telemetry"]["unavailable"] or "nvidia-ml-py" in result["telemetry"]["unavailable"]
    assert result["vram"]["unavailable"].startswith("no CUDA")
    assert result["diagnosis"]["verdict"] == "unknown"
    environment = result["environment"]
    # "v1.10.1" from git, "1.10.1" from CHANGELOG.md in a checkout without .git (the tarball)
    assert environment["webui"]["version"].removeprefix("v").startswith("1.10.1")
    assert environment["model"]["kind"] == "SD1" and environment["model"]["hash"]
    assert any("925997e9" in note for note in result["notes"])  # not the preset's reference model
    assert result["baseline"]["status"] == "no baseline"
    assert http_json(webui.url + "/sdapi/v1/options")["CLIP_stop_at_last_layers"] == 1  # clip skip 2 undone
    stored = (webui.data_dir / "speedkit" / "bench-history.jsonl").read_text().splitlines()
    assert json.loads(stored[-1])["label"] == "tiny"
    for run in result["runs"]:  # where the time outside sampling went, each phase once
        phases = run["phases_s"]
        assert set(phases) == {"conditioning", "vae_decode", "torch_gc", "speedkit", "other"}
        assert phases["vae_decode"] > 0 and sum(phases.values()) <= run["total_s"] - run["sampler_s"] + 1e-3
        assert phases["speedkit"] == 0  # Speedkit off: nothing of its own
    assert_restored(webui, pristine)


def test_a_single_run_without_warm_up_is_answered(webui):
    """One run has no spread: the answer must still be strict JSON (no NaN)."""
    result = bench(webui, overrides={**TINY, "runs": 1, "warmup": 0})
    assert len(result["runs"]) == 1 and result["speed"]["sampler_its"]["n"] == 1


def test_speedkit_switches_in_a_bench_are_applied_and_restored(webui, pristine):
    result = bench(webui, speedkit=[True, "sdp-math", "fraction", 0.5, 0.5])
    assert result["speedkit"] == {
        "Speedkit attention": "sdp-math",
        "Speedkit cutoff": "fraction 0.5",
        "Speedkit ToMe": "0.5",
    }
    assert status(webui)["last_generation"]["unet_calls"] == {"with_uncond": 2, "without_uncond": 2}
    for run in result["runs"]:  # Speedkit's own work, per hook, adds up to its phase
        own = run["speedkit_overhead_s"]
        assert {"activate", "passes", "finish"} <= set(own)
        assert abs(sum(own.values()) - run["phases_s"]["speedkit"]) < 1e-3
    assert_restored(webui, pristine)


def test_the_switch_matrix_compares_each_switch_with_the_baseline(webui, pristine):
    matrix = bench(webui, matrix=True, speedkit=[True, "keep", "off", 0.75, 0.3])
    rows = {row["label"]: row for row in matrix["rows"]}
    assert next(iter(rows)) == "baseline (Speedkit off)" and rows["baseline (Speedkit off)"]["speedup"] == 1.0
    assert {
        "attention sdp-math",
        "cutoff fraction 0.75",
        "ToMe 0.5",
        "channels-last",
        "all together",
        "your settings",
    } <= set(rows)
    assert all(row["runs"] == 2 for row in rows.values())
    assert rows["attention sdp-math"]["run_to_run"]["identical"] is True  # deterministic kernel
    assert rows["ToMe 0.5"]["vs_baseline"]["identical"] is False  # lossy: the image changes
    assert rows["ToMe 0.5"]["vs_baseline"]["psnr_db"] > 0
    assert rows["your settings"]["speedkit"] == {"Speedkit ToMe": "0.3"}
    assert_restored(webui, pristine)


def test_a_matrix_of_custom_entries_reports_utilisation_and_notes_per_row(webui, pristine):
    entries = [
        {"label": "lean", "speedkit": [True, "keep", "off", 0.75, 0, 0, 1, 2, 2, False, -1, False, False, True]},
        {"label": "graph", "speedkit": [True, "keep", "off", 0.75, 0, 0, 1, 2, 2, False, -1, False, True, False]},
    ]
    entries.append({"label": "absent", "speedkit": "extension-absent"})
    matrix = bench(webui, matrix=True, entries=entries)
    rows = {row["label"]: row for row in matrix["rows"]}
    assert list(rows) == ["baseline (Speedkit off)", "lean", "graph", "absent"]
    assert rows["absent"]["vs_baseline"]["identical"] is True
    assert rows["lean"]["speedkit"] == {"Speedkit lean step": "True"}
    assert rows["lean"]["vs_baseline"]["identical"] is True  # lossless
    assert "runs on cpu" in rows["graph"]["notes"]  # no GPU here: eager, and the row says why
    assert all("gpu_util" in row for row in rows.values())
    assert_restored(webui, pristine)


def test_an_interrupt_keeps_the_runs_done_so_far(webui, pristine):
    results = []
    body = {"overrides": {**TINY, "steps": 40, "runs": 6, "warmup": 0}}
    worker = threading.Thread(target=lambda: results.append(post(webui, "/speedkit/v1/bench", {**body})))
    worker.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = http_json(webui.url + "/sdapi/v1/progress")["state"]
        if state["job_count"] == 6 and state["job_no"] >= 1:  # the first timed run is done
            break
        time.sleep(0.1)
    http_json(webui.url + "/sdapi/v1/interrupt", {})
    worker.join(600)
    code, result = results[0]
    assert code == 200, result
    assert result["interrupted"] is True
    assert 1 <= len(result["runs"]) < 6
    assert any(note.startswith("interrupted") for note in result["notes"])
    assert_restored(webui, pristine)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preset": "Nope"}, "preset"),
        ({"overrides": {"steps": 0}}, "steps"),
        ({"overrides": {"width": 100}}, "width"),
        ({"overrides": {"teleport": 1}}, "teleport"),
        ({"speedkit": [True, "quantum"]}, "attention (args[1])"),
        ({"speedkit": [True, "sdp-cudnn"]}, "sdp-cudnn"),
        ({"matrix": "yes"}, "matrix"),
        ({"matrix": True, "entries": [{"label": "x", "speedkit": [True, "quantum"]}]}, "entries[0].speedkit"),
        ({"matrix": True, "entries": [{"label": "x"}]}, "entries[0]"),
        ({"entries": [{"label": "x", "speedkit": [True]}]}, "entries"),
        ({"turbo": True}, "turbo"),
    ],
)
def test_bad_parameters_are_refused_with_422_naming_the_field(webui, body, field):
    code, answer = post(webui, "/speedkit/v1/bench", body)
    assert code == 422, answer
    assert field in answer["detail"]


def test_the_cli_prints_the_table_from_a_live_webui(webui):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    argv = ["bench", "--url", webui.url, "--steps", "4", "--width", "64", "--height", "64", "--runs", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "lib_speedkit", *argv], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Sampler it/s (a step = the whole batch), median (min–max)" in done.stdout and "Diagnosis:" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "lib_speedkit", "bench", "--url", webui.url, "--speedkit", '[true, "sdp-cudnn"]'],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "422" in refused.stderr and "sdp-cudnn" in refused.stderr
