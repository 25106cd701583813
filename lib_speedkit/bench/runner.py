"""Host-agnostic benchmark runner: warm-up, timed runs, telemetry, summaries, diagnosis.

The host supplies `generate(preset, plan) -> RunMeasurement` (the WebUI adapter runs a real
generation; the standalone bench runs a UNet loop). What is timed:
  sampler it/s      steps x batch count / seconds inside sampling, device-synchronised: sampler
                    steps per second as the console's progress bar counts them (one step
                    denoises the whole batch, so this does not grow with the batch size);
  end-to-end it/s   steps x batch size x batch count / seconds of the whole generation
                    (the System-Info extension's definition, so community numbers compare);
  time taken        wall seconds of the whole call, as the WebUI prints "Time taken".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..plan import SpeedPlan, format_infotext
from .diagnosis import diagnose
from .history import SCHEMA_VERSION
from .imagediff import compare, image_digest
from .presets import BenchPreset
from .stats import summarise
from .telemetry import TelemetryReport, TelemetrySampler


class BenchInterrupted(Exception):
    """Raised by a generator when the user interrupted; the runner keeps what it has."""


@dataclass
class RunMeasurement:
    """One generation. Times in seconds; `sampling_windows` are (start, end) perf_counter pairs."""

    sampler_seconds: float
    total_seconds: float
    time_taken_seconds: float
    sampling_windows: list[tuple[float, float]] = field(default_factory=list)
    phases_seconds: dict[str, float] = field(default_factory=dict)  # outside sampling: conditioning, VAE decode, ...
    vram_mb: dict[str, float | None] = field(default_factory=dict)
    first_image: object = None
    interrupted: bool = False
    info: dict = field(default_factory=dict)


@dataclass
class RunRecord:
    measurement: RunMeasurement
    sampler_its: float
    end_to_end_its: float

    def as_dict(self) -> dict:
        m = self.measurement
        return {
            "sampler_its": self.sampler_its,
            "end_to_end_its": self.end_to_end_its,
            "sampler_s": m.sampler_seconds,
            "total_s": m.total_seconds,
            "time_taken_s": m.time_taken_seconds,
            "phases_s": m.phases_seconds,
            "speedkit_overhead_s": (m.info.get("speedkit") or {}).get("overhead_s") or {},
            "vram_mb": m.vram_mb,
            "interrupted": m.interrupted,
            "attention": m.info.get("attention"),
            "image_sha256": image_digest(m.first_image),
            "cuda_graph": (m.info.get("speedkit") or {}).get("cuda_graph"),
            "deepcache": (m.info.get("speedkit") or {}).get("deepcache"),
            "notes": (m.info.get("speedkit") or {}).get("notes") or [],
        }


Generator = Callable[[BenchPreset, "SpeedPlan | None"], RunMeasurement]
Progress = Callable[[str], None]


def _speeds(preset: BenchPreset, m: RunMeasurement) -> RunRecord:
    sampler_steps = preset.steps * preset.batch_count
    images = preset.images_per_run
    sampler_its = sampler_steps / m.sampler_seconds if m.sampler_seconds > 0 else float("nan")
    end_to_end = preset.steps * images / m.total_seconds if m.total_seconds > 0 else float("nan")
    return RunRecord(m, sampler_its, end_to_end)


def run_benchmark(
    generate: Generator,
    preset: BenchPreset,
    plan: SpeedPlan | None,
    telemetry: TelemetrySampler,
    progress: Progress = lambda message: None,
    label: str = "",
) -> dict:
    """Warm up, then time `preset.runs` generations; returns the result (schema below)."""
    notes: list[str] = []
    interrupted = False
    records: list[RunRecord] = []
    try:
        for index in range(preset.warmup):
            progress(f"warm-up {index + 1}/{preset.warmup}")
            if generate(preset, plan).interrupted:
                raise BenchInterrupted
        telemetry.start()
        for index in range(preset.runs):
            progress(f"run {index + 1}/{preset.runs}")
            measurement = generate(preset, plan)
            records.append(_speeds(preset, measurement))
            if measurement.interrupted:
                raise BenchInterrupted
    except BenchInterrupted:
        interrupted = True
        notes.append("interrupted: the results below are from the runs completed before the interrupt")
    report = telemetry.report([w for r in records for w in r.measurement.sampling_windows])
    return build_result(preset, plan, records, report, interrupted, notes, label)


def build_result(preset, plan, records, telemetry: TelemetryReport, interrupted, notes, label) -> dict:
    complete = [r for r in records if not r.measurement.interrupted]
    speed = {}
    if complete:
        speed = {
            "sampler_its": summarise([r.sampler_its for r in complete]).as_dict(),
            "end_to_end_its": summarise([r.end_to_end_its for r in complete]).as_dict(),
            "time_taken_s": summarise([r.measurement.time_taken_seconds for r in complete]).as_dict(),
            "seconds_per_image": summarise(
                [r.measurement.total_seconds / preset.images_per_run for r in complete]
            ).as_dict(),
        }
    utilisation = telemetry.mean("utilisation_percent")
    return {
        "schema": SCHEMA_VERSION,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "label": label,
        "preset": preset.as_dict(),
        "speedkit": format_infotext(plan) if plan is not None else {},
        "timed": "sampler: sampling only, device-synchronised; end-to-end: the whole generation; "
        "time taken: the whole call",
        "speed": speed,
        "runs": [r.as_dict() for r in records],
        "vram": _vram_peaks(records),
        "telemetry": telemetry.as_dict(),
        "diagnosis": diagnose(utilisation, telemetry.unavailable or "no GPU utilisation was measured").__dict__,
        "interrupted": interrupted,
        "notes": notes,
    }


def _vram_peaks(records: Sequence[RunRecord]) -> dict:
    peaks: dict[str, float | None] = {}
    for key in ("active_peak_mb", "reserved_peak_mb", "system_peak_mb", "total_mb"):
        values = [r.measurement.vram_mb.get(key) for r in records if r.measurement.vram_mb.get(key) is not None]
        peaks[key] = max(values) if values else None
    if all(value is None for value in peaks.values()):
        peaks["unavailable"] = "no CUDA device: VRAM is not measured"
    return peaks


# --------------------------------------------------------------------------- the switch matrix


@dataclass(frozen=True)
class MatrixEntry:
    label: str
    plan: SpeedPlan | None  # None: Speedkit off (the baseline)
    around: Callable[[], Callable[[], None]] | None = None
    """Run before each of this entry's generations; returns what to run after it (e.g. take the
    extension's patches out, to measure its cost when off)."""

    def generate(self, generate: Generator, preset: BenchPreset) -> RunMeasurement:
        restore = self.around() if self.around is not None else None
        try:
            return generate(preset, self.plan)
        finally:
            if restore is not None:
                restore()


def run_matrix(
    generate: Generator,
    preset: BenchPreset,
    entries: Sequence[MatrixEntry],
    telemetry: TelemetrySampler,
    progress: Progress = lambda message: None,
    images: dict | None = None,
) -> dict:
    """Every entry `preset.runs` times, alternating the order each round to cancel drift.

    Rows: it/s, speedup vs the first entry (the baseline), VRAM, image difference vs the
    baseline's image, and between an entry's own first two runs (run-to-run nondeterminism).
    `images`, when given, receives each entry's first image by label (they are not JSON).
    """
    per_entry: dict[str, list[RunRecord]] = {e.label: [] for e in entries}
    interrupted = False
    telemetry.start()
    try:
        for entry in entries:
            progress(f"warm-up: {entry.label}")
            for _ in range(preset.warmup):
                if entry.generate(generate, preset).interrupted:
                    raise BenchInterrupted
        for round_index in range(preset.runs):
            order = entries if round_index % 2 == 0 else list(reversed(entries))
            for entry in order:
                progress(f"round {round_index + 1}/{preset.runs}: {entry.label}")
                measurement = entry.generate(generate, preset)
                per_entry[entry.label].append(_speeds(preset, measurement))
                if measurement.interrupted:
                    raise BenchInterrupted
    except BenchInterrupted:
        interrupted = True
    report = telemetry.report([w for rs in per_entry.values() for r in rs for w in r.measurement.sampling_windows])
    if images is not None:
        images.update({label: records[0].measurement.first_image for label, records in per_entry.items() if records})
    rows = _matrix_rows(entries, per_entry)
    for row in rows:  # the GPU's utilisation while this entry sampled
        windows = [w for r in per_entry[row["label"]] for w in r.measurement.sampling_windows]
        row["gpu_util"] = telemetry.report(windows).metrics.get("utilisation_percent") if windows else None
    return {
        "schema": SCHEMA_VERSION,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "preset": preset.as_dict(),
        "rows": rows,
        "telemetry": report.as_dict(),
        "interrupted": interrupted,
        "notes": ["interrupted: rows may have fewer runs"] if interrupted else [],
    }


def _matrix_rows(entries: Sequence[MatrixEntry], per_entry: dict[str, list[RunRecord]]) -> list[dict]:
    baseline_records = per_entry[entries[0].label]
    baseline_its = _median([r.sampler_its for r in baseline_records])
    baseline_image = baseline_records[0].measurement.first_image if baseline_records else None
    rows = []
    for entry in entries:
        records = [r for r in per_entry[entry.label] if not r.measurement.interrupted]
        its = _median([r.sampler_its for r in records])
        images = [r.measurement.first_image for r in records if r.measurement.first_image is not None]
        rows.append(
            {
                "label": entry.label,
                "speedkit": format_infotext(entry.plan) if entry.plan is not None else {},
                "runs": len(records),
                "sampler_its": summarise([r.sampler_its for r in records]).as_dict() if records else None,
                "end_to_end_its": summarise([r.end_to_end_its for r in records]).as_dict() if records else None,
                "speedup": its / baseline_its if its and baseline_its else None,
                "vram": _vram_peaks(records),
                "vs_baseline": _diff(baseline_image, images[0] if images else None),
                "run_to_run": _diff(images[0], images[1]) if len(images) >= 2 else None,
                "notes": _speedkit_notes(records),
                "graph_captures": [_graph_captures(r) for r in records],
            }
        )
    return rows


def _speedkit_record(record: RunRecord) -> dict:
    """The generation record the host put into the measurement (`info["speedkit"]`), or {}."""
    return record.measurement.info.get("speedkit") or {}


def _speedkit_notes(records: Sequence[RunRecord]) -> str:
    """The notes of the entry's last generation (e.g. why a switch did not apply), from its record."""
    for record in reversed(records):
        notes = _speedkit_record(record).get("notes")
        if notes:
            return "; ".join(notes)
    return ""


def _graph_captures(record: RunRecord) -> int | None:
    graphs = _speedkit_record(record).get("cuda_graph")
    return graphs["captures"] if graphs else None


def _median(values: Sequence[float]) -> float | None:
    return summarise(values).median if values else None


def _diff(a, b) -> dict | None:
    if a is None or b is None:
        return None
    return compare(a, b).as_dict()
