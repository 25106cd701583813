"""Human-readable forms of a bench result: an HTML block for the tab, plain text for the CLI."""

from __future__ import annotations

import html
import math


def _num(value, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _summary(summary: dict | None, digits: int = 2) -> str:
    if not summary:
        return "n/a"
    return f"{_num(summary['median'], digits)} ({_num(summary['min'], digits)}–{_num(summary['max'], digits)})"


def speed_rows(result: dict) -> list[tuple[str, str]]:
    speed = result.get("speed") or {}
    telemetry = result.get("telemetry") or {}
    metrics = telemetry.get("metrics") or {}
    vram = result.get("vram") or {}
    util = metrics.get("utilisation_percent")
    rows = [
        ("Sampler it/s (a step = the whole batch), median (min–max)", _summary(speed.get("sampler_its"))),
        ("End-to-end it/s", _summary(speed.get("end_to_end_its"))),
        ("Time taken, s", _summary(speed.get("time_taken_s"), 3)),
        ("Seconds per image", _summary(speed.get("seconds_per_image"), 3)),
        (
            "GPU utilisation while sampling, mean (p5–p95)",
            f"{_num(util['mean'], 0)} % ({_num(util['p5'], 0)}–{_num(util['p95'], 0)})"
            if util
            else f"n/a: {telemetry.get('unavailable', '')}",
        ),
        ("SM clock, MHz (mean)", _num((metrics.get("sm_clock_mhz") or {}).get("mean"), 0)),
        ("Power, W (mean)", _num((metrics.get("power_watts") or {}).get("mean"), 0)),
        ("Temperature, °C (max)", _num((metrics.get("temperature_c") or {}).get("max"), 0)),
        (
            "VRAM A / R / Sys peak, MB",
            f"{_num(vram.get('active_peak_mb'), 0)} / {_num(vram.get('reserved_peak_mb'), 0)} / "
            f"{_num(vram.get('system_peak_mb'), 0)} of {_num(vram.get('total_mb'), 0)}"
            if "unavailable" not in vram
            else f"n/a: {vram['unavailable']}",
        ),
        (
            "WebUI process CPU, % of one core",
            _num(telemetry.get("cpu_percent"), 0) if telemetry.get("cpu_percent") is not None else "n/a",
        ),
    ]
    return rows


def baseline_lines(result: dict) -> list[str]:
    baseline = result.get("baseline") or {}
    if baseline.get("status") != "ok":
        return [f"Community baseline: {baseline.get('status', 'n/a')} ({baseline.get('reason', '')})"]
    lines = [f"Community baseline for {baseline['gpu']} ({baseline['match']} match), {baseline['ours']}:"]
    for row in baseline["rows"]:
        lines.append(
            f"  you {_num(row['yours_its'])} it/s vs median {_num(row['median_its'])} (p90 {_num(row['p90_its'])},"
            f" n={row['n']}) at batch {row['batch_size']}: x{_num(row['ratio'])}. Theirs: {row['definition']}"
        )
    return lines


def to_text(result: dict) -> str:
    preset = result.get("preset", {})
    p = preset
    header = (
        f"{p.get('name')}: {p.get('sampler')}, {p.get('steps')} steps, CFG {p.get('cfg_scale')}, "
        f"{p.get('width')}x{p.get('height')}, batch {p.get('batch_size')} x {p.get('batch_count')}, "
        f"{len(result.get('runs', []))} timed runs"
    )
    width = max(len(name) for name, _ in speed_rows(result))
    lines = [header, *(f"{name:<{width}}  {value}" for name, value in speed_rows(result))]
    diagnosis = result.get("diagnosis") or {}
    lines.append(f"Diagnosis: {diagnosis.get('message', 'n/a')}")
    lines += baseline_lines(result)
    lines += [f"Note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)


def to_html(result: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>" for name, value in speed_rows(result)
    )
    preset = result.get("preset", {})
    diagnosis = result.get("diagnosis") or {}
    extra = "".join(f"<p>{html.escape(line)}</p>" for line in baseline_lines(result))
    notes = "".join(f"<p class='speedkit_note'>{html.escape(note)}</p>" for note in result.get("notes", []))
    return (
        f"<div class='speedkit_result'><h3>{html.escape(str(preset.get('name')))}</h3>"
        f"<table class='speedkit_table'>{rows}</table>"
        f"<p class='speedkit_diagnosis speedkit_{html.escape(diagnosis.get('verdict', 'unknown').replace(' ', '_'))}'>"
        f"{html.escape(diagnosis.get('message', ''))}</p>{extra}{notes}</div>"
    )


MATRIX_HEADER = ("configuration", "sampler it/s (min–max)", "speedup", "VRAM R peak MB", "vs baseline", "run to run")


def matrix_cells(row: dict) -> tuple[str, ...]:
    """One matrix row as the cells of MATRIX_HEADER."""
    return (
        row["label"],
        _summary(row["sampler_its"]),
        _num(row["speedup"]),
        _num(row["vram"].get("reserved_peak_mb"), 0),
        _diff_text(row["vs_baseline"]),
        _diff_text(row["run_to_run"]),
    )


def matrix_to_text(matrix: dict) -> str:
    table = [MATRIX_HEADER, *(matrix_cells(row) for row in matrix["rows"])]
    widths = [max(len(line[i]) for line in table) for i in range(len(MATRIX_HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table]
    return "\n".join(lines + [f"Note: {note}" for note in matrix.get("notes", [])])


def _diff_text(diff: dict | None) -> str:
    if diff is None:
        return "n/a"
    if diff["identical"]:
        return "identical"
    return f"max {diff['max_abs']}, PSNR {_num(diff['psnr_db'], 1)} dB"


def matrix_to_html(matrix: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in MATRIX_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in matrix_cells(row)) + "</tr>"
        for row in matrix["rows"]
    )
    notes = "".join(f"<p>{html.escape(note)}</p>" for note in matrix.get("notes", []))
    return f"<div class='speedkit_result'><table class='speedkit_table'><tr>{head}</tr>{body}</table>{notes}</div>"
