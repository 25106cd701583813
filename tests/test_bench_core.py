"""Bench building blocks: presets, statistics, diagnosis, image difference, report rendering."""

import math

import numpy as np
import pytest

from lib_speedkit.bench import report
from lib_speedkit.bench.diagnosis import GPU_BOUND_FROM, HOST_BOUND_BELOW, diagnose
from lib_speedkit.bench.imagediff import compare
from lib_speedkit.bench.presets import ASUKA_NEGATIVE, PRESETS, get_preset
from lib_speedkit.bench.stats import percentile, summarise
from lib_speedkit.errors import PlanError


def test_asuka_preset_has_the_published_settings():
    asuka = PRESETS["Asuka test"]
    assert (asuka.sampler, asuka.steps, asuka.cfg_scale, asuka.seed) == ("Euler", 28, 12.0, 2870305590)
    assert (asuka.width, asuka.height, asuka.clip_skip, asuka.reference_model_hash) == (512, 512, 2, "925997e9")
    assert asuka.prompt == "masterpiece, best quality, masterpiece, asuka langley sitting cross legged on a chair"
    assert asuka.negative_prompt == ASUKA_NEGATIVE and "jpeg artifacts,signature, watermark" in ASUKA_NEGATIVE
    assert PRESETS["SD1.5 quick"].steps == 20 and PRESETS["SDXL 1024²"].width == 1024


def test_overrides_are_validated_and_converted():
    preset = get_preset("Asuka test", {"batch_size": 4, "runs": "5", "steps": 10.0})
    assert (preset.batch_size, preset.runs, preset.steps, preset.images_per_run) == (4, 5, 10, 4)


@pytest.mark.parametrize(
    ("name", "overrides", "field"),
    [
        ("Nope", {}, "preset"),
        ("Asuka test", {"steps": 0}, "steps"),
        ("Asuka test", {"width": 100}, "width"),
        ("Asuka test", {"batch_size": 65}, "batch_size"),
        ("Asuka test", {"cfg_scale": "high"}, "cfg_scale"),
        ("Asuka test", {"name": "x"}, "name"),
        ("Asuka test", {"runs": True}, "runs"),
    ],
)
def test_bad_presets_name_the_field(name, overrides, field):
    with pytest.raises(PlanError) as caught:
        get_preset(name, overrides)
    assert caught.value.field == field


def test_summary_reports_median_and_spread():
    summary = summarise([10.0, 12.0, 11.0, float("nan"), 30.0])
    assert (summary.n, summary.median, summary.minimum, summary.maximum) == (4, 11.5, 10.0, 30.0)
    assert summary.spread_percent == pytest.approx(100 * 20 / 11.5)
    assert percentile([1, 2, 3, 4, 5], 50) == 3 and percentile([0, 10], 95) == pytest.approx(9.5)
    with pytest.raises(ValueError):
        summarise([float("nan")])


def test_results_sent_as_json_carry_no_nan_or_infinity():
    from lib_speedkit.bench.stats import finite_json

    result = {"spread": float("nan"), "runs": [{"util": float("inf"), "its": 1.5}], "name": "x", "n": 1}
    assert finite_json(result) == {"spread": None, "runs": [{"util": None, "its": 1.5}], "name": "x", "n": 1}


@pytest.mark.parametrize(
    ("utilisation", "verdict"),
    [
        (35, "host-bound"),
        (HOST_BOUND_BELOW, "partly host-bound"),
        (GPU_BOUND_FROM - 1, "partly host-bound"),
        (GPU_BOUND_FROM, "GPU-bound"),
        (None, "unknown"),
    ],
)
def test_diagnosis_thresholds(utilisation, verdict):
    diagnosis = diagnose(utilisation)
    assert diagnosis.verdict == verdict
    if verdict == "host-bound":
        assert "CPU/launch-bound" in diagnosis.message and "graph capture" in diagnosis.message


def test_image_difference():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert compare(a, a).as_dict()["identical"] and math.isinf(compare(a, a).psnr_db)
    diff = compare(a, b)
    assert diff.max_abs == 255 and diff.psnr_db == pytest.approx(10 * math.log10(255**2 / (255**2 / 192)))
    with pytest.raises(ValueError, match="size"):
        compare(a, np.zeros((4, 4, 3), np.uint8))


def test_text_report_says_what_is_missing():
    result = {
        "preset": PRESETS["Asuka test"].as_dict(),
        "speed": {"sampler_its": summarise([20.0, 22.0]).as_dict()},
        "telemetry": {"metrics": {}, "unavailable": "the NVML binding is not installed", "cpu_percent": None},
        "vram": {"unavailable": "no CUDA device: VRAM is not measured"},
        "diagnosis": diagnose(None).__dict__,
        "baseline": {"status": "no baseline", "reason": "no GPU was detected"},
        "runs": [{}, {}],
        "notes": ["model differs"],
    }
    text = report.to_text(result)
    assert "21.00 (20.00–22.00)" in text
    assert "n/a: the NVML binding is not installed" in text and "n/a: no CUDA device" in text
    assert "Community baseline: no baseline (no GPU was detected)" in text and "Note: model differs" in text
    assert "<table" in report.to_html(result)


def test_matrix_text_is_aligned_and_shows_run_to_run_differences():
    same = {"identical": True, "max_abs": 0, "psnr_db": None}
    differs = {"identical": False, "max_abs": 10, "psnr_db": 43.5}
    rows = [
        {
            "label": "baseline (Speedkit off)",
            "sampler_its": summarise([18.0, 19.0]).as_dict(),
            "speedup": 1.0,
            "vram": {"reserved_peak_mb": 3354.0},
            "vs_baseline": same,
            "run_to_run": same,
        },
        {
            "label": "ToMe 0.5",
            "sampler_its": summarise([16.5]).as_dict(),
            "speedup": 0.91,
            "vram": {"reserved_peak_mb": 2978.0},
            "vs_baseline": differs,
            "run_to_run": differs,
        },
    ]
    lines = report.matrix_to_text({"rows": rows, "notes": []}).splitlines()
    assert lines[0].index("speedup") == lines[1].index("1.00") == lines[2].index("0.91")
    assert lines[2].endswith("max 10, PSNR 43.5 dB  max 10, PSNR 43.5 dB")
    page = report.matrix_to_html({"rows": rows, "notes": ["n"]})
    assert page.count("<tr>") == 3 and "<td>ToMe 0.5</td>" in page and "<p>n</p>" in page
