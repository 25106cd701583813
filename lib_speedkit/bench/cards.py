"""What the Speedkit tab shows after a run, read at a glance: a result card with the big numbers,
"you vs the community" as bars, and Compare switches as speedup bars. Plain HTML and CSS (no
plotting library, no script), so it renders the same in every WebUI theme.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from .baselines import find_gpu, load_table, normalise_gpu_name
from .report import _diff_text, _num

NEIGHBOURS = 3
"""GPUs shown on each side of yours (by community median at your batch size)."""


def _big(label: str, value: str, unit: str, detail: str = "") -> str:
    detail_html = f"<span class='speedkit_detail'>{html.escape(detail)}</span>" if detail else ""
    return (
        f"<div class='speedkit_big'><span class='speedkit_big_label'>{html.escape(label)}</span>"
        f"<span class='speedkit_big_value'>{html.escape(value)}</span>"
        f"<span class='speedkit_big_unit'>{html.escape(unit)}</span>{detail_html}</div>"
    )


def _spread(summary: dict | None, digits: int = 1) -> tuple[str, str]:
    if not summary or summary.get("median") is None or math.isnan(summary["median"]):
        return "n/a", ""
    return _num(summary["median"], digits), f"{_num(summary['min'], digits)}–{_num(summary['max'], digits)}"


def result_card_html(result: dict, community: str = "") -> str:
    """The big numbers of one bench result, the diagnosis, VRAM peaks, then `community`."""
    speed = result.get("speed") or {}
    util = ((result.get("telemetry") or {}).get("metrics") or {}).get("utilisation_percent")
    vram = result.get("vram") or {}
    diagnosis = result.get("diagnosis") or {}
    sampler, sampler_spread = _spread(speed.get("sampler_its"))
    e2e, e2e_spread = _spread(speed.get("end_to_end_its"))
    per_image, per_image_spread = _spread(speed.get("seconds_per_image"), 3)
    bigs = [
        _big("Sampler", sampler, "it/s", sampler_spread),
        _big("End-to-end", e2e, "it/s", e2e_spread),
        _big("Per image", per_image, "s", per_image_spread),
        _big("GPU busy", _num(util["mean"], 0) if util else "n/a", "%" if util else "", "while sampling"),
    ]
    verdict = html.escape(diagnosis.get("verdict", "unknown").replace(" ", "_"))
    vram_text = (
        f"VRAM peak: active {_num(vram.get('active_peak_mb'), 0)} MB, reserved {_num(vram.get('reserved_peak_mb'), 0)}"
        f" MB, system {_num(vram.get('system_peak_mb'), 0)} of {_num(vram.get('total_mb'), 0)} MB"
        if "unavailable" not in vram
        else f"VRAM: n/a ({vram['unavailable']})"
    )
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in result.get("notes", []))
    preset = result.get("preset") or {}
    title = f"{preset.get('name', '')}: {preset.get('width')}×{preset.get('height')}, batch {preset.get('batch_size')}"
    return (
        f"<div class='speedkit_card'><h3>{html.escape(title)}</h3><div class='speedkit_bigs'>{''.join(bigs)}</div>"
        f"<p class='speedkit_diagnosis speedkit_{verdict}'>{html.escape(diagnosis.get('message', ''))}</p>"
        f"<p class='speedkit_vram'>{html.escape(vram_text)}</p>{community}"
        + (f"<ul class='speedkit_notes'>{notes}</ul>" if notes else "")
        + "</div>"
    )


def _bar(label: str, value: float, top: float, text: str, mine: bool = False) -> str:
    width = max(1.0, 100.0 * value / top) if top > 0 else 1.0
    kind = "speedkit_bar speedkit_bar_mine" if mine else "speedkit_bar"
    return (
        f"<div class='speedkit_bar_row'><span class='speedkit_bar_label'>{html.escape(label)}</span>"
        f"<span class='{kind}' style='width:{width:.1f}%'></span>"
        f"<span class='speedkit_bar_text'>{html.escape(text)}</span></div>"
    )


def community_neighbours(gpu_key: str, era: str, batch: str, table: dict) -> list[tuple[str, dict]]:
    """(display name, {median, p90, n}) of the GPU and its neighbours by median, fastest first."""
    rows = [
        (key, gpu["display"], gpu["entries"][era][batch])
        for key, gpu in table["gpus"].items()
        if key and batch in gpu["entries"].get(era, {}) and gpu["entries"][era][batch]["n"] >= table["min_samples"]
    ]
    rows.sort(key=lambda row: row[2]["median"], reverse=True)
    index = next((i for i, row in enumerate(rows) if row[0] == gpu_key), None)
    if index is None:
        return []
    low, high = max(0, index - NEIGHBOURS), index + NEIGHBOURS + 1
    return [(display, entry) for _key, display, entry in rows[low:high]]


def community_chart_html(result: dict, table: dict | None = None) -> str:
    """You vs the community: bars of the community medians of your GPU (the one compared with)
    and its neighbours, at your batch size, with your end-to-end run marked."""
    table = table or load_table()
    baseline = result.get("baseline") or {}
    heading = "<h4>You vs the community</h4>"
    if baseline.get("status") != "ok":
        reason = f"{baseline.get('status', 'no baseline')}: {baseline.get('reason', '')}"
        return f"{heading}<p class='speedkit_muted'>{html.escape(reason)}</p>"
    row = max(baseline["rows"], key=lambda r: r["n"])  # the era with the most results
    match = find_gpu(baseline["gpu"], table)
    key = next((k for k, g in table["gpus"].items() if g["display"] == match.gpu), normalise_gpu_name(baseline["gpu"]))
    neighbours = community_neighbours(key, row["era"], str(row["batch_size"]), table)
    yours = row["yours_its"]
    top = max([yours, *(entry["median"] for _name, entry in neighbours)])
    bars = [_bar("you", yours, top, f"{_num(yours)} it/s ({_num(row['ratio'])}× the median)", mine=True)]
    for name, entry in neighbours:
        text = f"{_num(entry['median'])} it/s (p90 {_num(entry['p90'])}, n={entry['n']})"
        bars.append(_bar(name, entry["median"], top, text, mine=name == baseline["gpu"]))
    definition = f"Theirs: {row['definition']}. {baseline['ours']}."
    match_text = f"{baseline['gpu']} ({baseline['match']} match), batch {row['batch_size']}"
    return (
        f"{heading}<p>{html.escape(match_text)}</p><div class='speedkit_bars'>{''.join(bars)}</div>"
        f"<p class='speedkit_muted'>{html.escape(definition)}</p>"
    )


def matrix_chart_html(matrix: dict) -> str:
    """Compare switches: speedup over the baseline as bars, the image difference beside each."""
    rows: Sequence[dict] = matrix.get("rows", [])
    top = max([row["speedup"] or 0.0 for row in rows] + [1.0])
    bars = []
    for row in rows:
        speedup = row["speedup"] or 0.0
        text = f"{_num(row['speedup'])}× ({_summary_text(row)}), image: {_diff_text(row['vs_baseline'])}"
        bars.append(_bar(row["label"], speedup, top, text, mine=row["label"] == "your settings"))
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in matrix.get("notes", []))
    return (
        "<div class='speedkit_card'><h4>Speedup over the baseline (sampler it/s), image difference to it</h4>"
        f"<div class='speedkit_bars'>{''.join(bars)}</div>"
        + (f"<ul class='speedkit_notes'>{notes}</ul>" if notes else "")
        + "</div>"
    )


def _summary_text(row: dict) -> str:
    summary = row.get("sampler_its")
    return f"{_num(summary['median'])} it/s" if summary else "n/a"


def largest_difference(matrix: dict) -> str | None:
    """The label of the row whose image differs most from the baseline (lowest PSNR), if any differs."""
    differing = [row for row in matrix.get("rows", []) if row["vs_baseline"] and not row["vs_baseline"]["identical"]]
    if not differing:
        return None
    return min(differing, key=lambda row: row["vs_baseline"]["psnr_db"])["label"]


def gpu_choices(table: dict | None = None) -> list[str]:
    """Every GPU with community results, by name (for "Compare with")."""
    table = table or load_table()
    return sorted({gpu["display"] for key, gpu in table["gpus"].items() if key})
