"""Summary statistics for repeated timings: median and spread, never a lone mean."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    minimum: float
    maximum: float
    mean: float
    p5: float
    p95: float

    @property
    def spread_percent(self) -> float:
        """(max - min) / median in percent: how much the runs disagree."""
        return 100.0 * (self.maximum - self.minimum) / self.median if self.median else math.nan

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "mean": self.mean,
            "p5": self.p5,
            "p95": self.p95,
            "spread_percent": self.spread_percent,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of non-empty `values`."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(values: Sequence[float]) -> Summary:
    """Summary of finite values; ValueError when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        raise ValueError("no finite values to summarise")
    return Summary(
        n=len(finite),
        median=statistics.median(finite),
        minimum=min(finite),
        maximum=max(finite),
        mean=statistics.fmean(finite),
        p5=percentile(finite, 5),
        p95=percentile(finite, 95),
    )


def finite_json(value: object) -> object:
    """`value` with every NaN or infinite float (a spread of one run, a utilisation with no
    reading) replaced by None, as strict JSON needs (the WebUI's API refuses to send NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    return value
