"""The slimming report as text (CLI) and HTML (the tab), from `SlimReport.as_dict()`."""

from __future__ import annotations

import html

EXAMPLES = 3


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _lines(result: dict) -> list[str]:
    before, after = result["size_before"], result["size_after"]
    saved = 100 * (1 - after / before) if before else 0.0
    lines = [
        f"{result['architecture']}: {result['source']}",
        f"  -> {result['output']}" + (f" (+ {result['yaml']})" if result.get("yaml") else ""),
        f"size: {_mb(before)} -> {_mb(after)} ({saved:.0f} % smaller)",
        f"keys: {result['keys_before']} -> {result['keys_after']}",
    ]
    for reason, keys in result["dropped"].items():
        shown = ", ".join(keys[:EXAMPLES]) + (", …" if len(keys) > EXAMPLES else "")
        lines.append(f"  dropped {len(keys)} ({reason}): {shown}")
    if result["added"]:
        lines.append(f"  added {len(result['added'])} (baked VAE): {', '.join(result['added'][:EXAMPLES])}")
    for item in result["skipped"]:
        lines.append(f"  not copied: {item}")
    for change, count in result["converted"].items():
        lines.append(f"dtype: {count} tensors {change}")
    if result["overflow"]:
        lines.append(f"WARNING: {len(result['overflow'])} tensors exceed fp16's range (inf): use bf16")
    rss = result.get("peak_rss_mb")
    lines.append(
        f"time: {result['seconds']:.1f} s; largest tensor {result['largest_tensor_mb']:.0f} MB"
        + (f"; process peak RSS {rss:.0f} MB" if rss else "")
    )
    lines += _check_lines(result.get("checks") or {})
    return lines


def _speed_line(label: str, record: dict) -> list[str]:
    parts = [f"{kind} {record[kind]['mb_per_s']:.0f} MB/s" for kind in ("cold", "warm") if record.get(kind)]
    lines = [f"read speed, {label}: " + ", ".join(parts) + (f" ({record['note']})" if record.get("note") else "")]
    return lines + ([record["hint"]] if record.get("hint") else [])


def _check_lines(checks: dict) -> list[str]:
    lines = []
    for label in ("source", "output"):
        if checks.get(f"load_speed_{label}"):
            lines += _speed_line(label, checks[f"load_speed_{label}"])
    if "load_test" in checks:
        test = checks["load_test"]
        lines.append("load test: " + ("passed" if test.get("ok") else "FAILED") + f" — {test.get('detail', '')}")
    if "image_difference" in checks:
        diff = checks["image_difference"]
        psnr = "identical" if diff.get("identical") else f"PSNR {diff['psnr_db']:.1f} dB"
        lines.append(f"same seed, original vs slimmed: max pixel difference {diff['max_abs']}/255, {psnr}")
    return lines


def to_text(result: dict) -> str:
    return "\n".join(_lines(result))


def to_html(result: dict) -> str:
    items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in _lines(result))
    return f"<div class='speedkit_slim_report'><ul>{items}</ul></div>"
