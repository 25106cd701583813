"""What the Speedkit tab shows after a run: a card with the big numbers, you vs the community as
bars (your GPU's neighbours at your batch size), and the switch comparison as speedup bars."""

import re

from lib_speedkit.bench.baselines import compare_with_baselines, load_table
from lib_speedkit.bench.cards import (
    community_chart_html,
    community_neighbours,
    gpu_choices,
    largest_difference,
    matrix_chart_html,
    result_card_html,
)

SPEED = {
    "sampler_its": {"median": 84.5, "min": 83.9, "max": 85.1},
    "end_to_end_its": {"median": 65.2, "min": 64.0, "max": 66.0},
    "seconds_per_image": {"median": 0.43, "min": 0.42, "max": 0.44},
}


def result(width=512, batch=1) -> dict:
    return {
        "preset": {
            "name": "Asuka test",
            "width": width,
            "height": width,
            "batch_size": batch,
            "sampler": "Euler",
            "steps": 28,
            "cfg_scale": 12,
        },
        "speed": SPEED,
        "telemetry": {"metrics": {"utilisation_percent": {"mean": 93.6, "p5": 90, "p95": 97}}},
        "vram": {"active_peak_mb": 2100.0, "reserved_peak_mb": 2600.0, "system_peak_mb": 3000.0, "total_mb": 143000},
        "diagnosis": {"verdict": "GPU-bound", "message": "The GPU is busy 94 % of the time: GPU-bound."},
        "notes": ["a note, with a comma"],
    }


def test_the_card_leads_with_the_big_numbers_and_says_what_they_mean():
    card = result_card_html(result())
    values = re.findall(r"speedkit_big_value'>([^<]*)<", card)
    assert values == ["84.5", "65.2", "0.430", "94"]
    assert "83.9–85.1" in card and "GPU-bound" in card and "reserved 2600 MB" in card
    assert "a note, with a comma" in card


def test_you_vs_the_community_shows_your_gpu_and_its_neighbours_at_your_batch_size():
    entry = result()
    entry["baseline"] = compare_with_baselines(entry, "NVIDIA GeForce RTX 4090", True)
    chart = community_chart_html(entry)
    labels = re.findall(r"speedkit_bar_label'>([^<]*)<", chart)
    assert labels[0] == "you" and "NVIDIA GeForce RTX 4090" in labels
    assert 4 <= len(labels) <= 2 + 2 * 3  # you, the GPU, up to three neighbours on each side
    assert "speedkit_bar_mine" in chart and "Theirs: " in chart and "batch 1" in chart


def test_the_neighbours_are_sorted_fastest_first_around_the_gpu():
    table = load_table()
    key = next(k for k, g in table["gpus"].items() if g["display"] == "NVIDIA GeForce RTX 4090")
    era = next(e for e, batches in table["gpus"][key]["entries"].items() if "1" in batches)
    rows = community_neighbours(key, era, "1", table)
    medians = [entry["median"] for _name, entry in rows]
    assert medians == sorted(medians, reverse=True) and "NVIDIA GeForce RTX 4090" in [name for name, _ in rows]


def test_without_a_comparable_baseline_the_chart_says_why():
    entry = result(width=1024)
    entry["baseline"] = compare_with_baselines(entry, "NVIDIA GeForce RTX 4090", True)
    assert "512x512 only" in community_chart_html(entry)


def test_the_comparison_is_speedup_bars_with_the_image_difference_beside_each():
    rows = [
        {
            "label": "baseline (Speedkit off)",
            "speedup": 1.0,
            "sampler_its": {"median": 31.6},
            "vs_baseline": {"identical": True, "max_abs": 0, "psnr_db": float("inf")},
        },
        {
            "label": "CUDA graph",
            "speedup": 2.67,
            "sampler_its": {"median": 84.5},
            "vs_baseline": {"identical": True, "max_abs": 0, "psnr_db": float("inf")},
        },
        {
            "label": "ToMe 0.5",
            "speedup": 1.1,
            "sampler_its": {"median": 34.7},
            "vs_baseline": {"identical": False, "max_abs": 40, "psnr_db": 31.2},
        },
    ]
    chart = matrix_chart_html({"rows": rows, "notes": []})
    widths = [float(w) for w in re.findall(r"width:([0-9.]+)%", chart)]
    assert widths[1] == 100.0 and widths[0] < widths[2] < widths[1]
    assert "2.67×" in chart and "PSNR 31.2 dB" in chart
    assert largest_difference({"rows": rows}) == "ToMe 0.5"
    assert largest_difference({"rows": rows[:2]}) is None


def test_every_gpu_with_community_results_can_be_compared_with():
    choices = gpu_choices()
    assert "NVIDIA GeForce RTX 4090" in choices and choices == sorted(choices)
