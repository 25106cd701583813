"""GPU telemetry sampled on a background thread during a run: NVML utilisation, memory, SM
clock, power and temperature; the process's CPU use (psutil). Without NVIDIA/NVML everything
still runs and the GPU fields read "n/a" with the reason.

`GpuProvider` is the interface the sampler reads (NVML in production, a fake in tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .stats import summarise

DEFAULT_INTERVAL = 0.05


@dataclass(frozen=True)
class GpuReading:
    utilisation_percent: float
    memory_used_bytes: int
    sm_clock_mhz: float
    power_watts: float
    temperature_c: float


class GpuProvider(Protocol):
    name: str

    def read(self) -> GpuReading: ...

    def close(self) -> None: ...


class TelemetryUnavailable(Exception):
    """Why GPU telemetry cannot be read here (shown as the "n/a" reason)."""


class NvmlProvider:
    """Reads one GPU through NVML (`pynvml`, from the nvidia-ml-py package)."""

    def __init__(self, device_index: int = 0, nvml_module=None):
        self._nvml = nvml_module if nvml_module is not None else _import_pynvml()
        try:
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(device_index)
            name = self._nvml.nvmlDeviceGetName(self._handle)
        except Exception as error:  # NVMLError has many subclasses: all mean "no NVML here"
            raise TelemetryUnavailable(f"NVML could not open GPU {device_index}: {error}") from error
        self.name = name.decode() if isinstance(name, bytes) else str(name)

    def read(self) -> GpuReading:
        nvml, handle = self._nvml, self._handle
        return GpuReading(
            utilisation_percent=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).used),
            sm_clock_mhz=float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            temperature_c=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        )

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a broken NVML must not fail a benchmark
            pass


def _import_pynvml():
    try:
        import pynvml
    except ImportError as error:
        raise TelemetryUnavailable("the NVML binding is not installed (pip install nvidia-ml-py)") from error
    return pynvml


def open_gpu_provider(device_index: int = 0) -> tuple[GpuProvider | None, str]:
    """(provider, "") or (None, the reason GPU telemetry is unavailable)."""
    try:
        return NvmlProvider(device_index), ""
    except TelemetryUnavailable as error:
        return None, str(error)


@dataclass
class TelemetryReport:
    """Per metric: summary dict (n, median, min, max, mean, p5, p95) or None with `unavailable`."""

    gpu_name: str | None
    samples: int
    metrics: dict[str, dict | None]
    unavailable: str = ""
    cpu_percent: float | None = None
    cpu_unavailable: str = ""

    def as_dict(self) -> dict:
        return {
            "gpu_name": self.gpu_name,
            "samples": self.samples,
            "metrics": self.metrics,
            "unavailable": self.unavailable,
            "cpu_percent": self.cpu_percent,
            "cpu_unavailable": self.cpu_unavailable,
        }

    def mean(self, metric: str) -> float | None:
        summary = self.metrics.get(metric)
        return summary["mean"] if summary else None


METRICS = ("utilisation_percent", "memory_used_bytes", "sm_clock_mhz", "power_watts", "temperature_c")


@dataclass
class TelemetrySampler:
    """Samples `provider` every `interval` seconds between start() and stop(), with timestamps.

    `report(windows)` summarises only the readings taken inside the given (start, end)
    perf_counter windows (e.g. the sampling phases), falling back to all readings.
    """

    provider: GpuProvider | None
    unavailable: str = ""
    interval: float = DEFAULT_INTERVAL
    cpu_meter: Callable[[], float] | None = None
    readings: list[tuple[float, GpuReading]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read_error = ""
        self._cpu_percent: float | None = None

    def start(self) -> TelemetrySampler:
        self.readings.clear()
        self._stop.clear()
        if self.cpu_meter is not None:
            self.cpu_meter()  # psutil's cpu_percent measures from the previous call
        if self.provider is not None:
            self._thread = threading.Thread(target=self._run, name="speedkit-telemetry", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reading = self.provider.read()
            except Exception as error:  # noqa: BLE001 - a failing read ends sampling, with the reason
                self._read_error = f"reading the GPU failed: {error}"
                return
            self.readings.append((time.perf_counter(), reading))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.cpu_meter is not None:
            self._cpu_percent = float(self.cpu_meter())

    def report(self, windows: Sequence[tuple[float, float]] = ()) -> TelemetryReport:
        self.stop()
        cpu_unavailable = "" if self.cpu_meter is not None else "psutil is not installed"
        name = getattr(self.provider, "name", None)
        inside = [r for at, r in self.readings if any(start <= at <= end for start, end in windows)]
        chosen = inside or [r for _, r in self.readings]
        if not chosen:
            reason = self.unavailable or self._read_error or "no samples were taken (the run was too short)"
            return TelemetryReport(name, 0, dict.fromkeys(METRICS), reason, self._cpu_percent, cpu_unavailable)
        metrics = {m: summarise([getattr(r, m) for r in chosen]).as_dict() for m in METRICS}
        return TelemetryReport(name, len(chosen), metrics, self._read_error, self._cpu_percent, cpu_unavailable)

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def process_cpu_meter() -> Callable[[], float] | None:
    """psutil's CPU percent of this process (100 = one core), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    process = psutil.Process()
    return process.cpu_percent


class SystemMemoryPeak:
    """Peak device memory used by ALL processes (total - lowest free), polled like the WebUI's
    memory monitor (torch.cuda.mem_get_info, 8 times a second). CUDA only; else None."""

    def __init__(self, interval: float = 0.125):
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.min_free: int | None = None
        self.total: int | None = None

    def start(self) -> SystemMemoryPeak:
        import torch

        if torch.cuda.is_available():
            self._poll()
            self._thread = threading.Thread(target=self._run, name="speedkit-memory", daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        import torch

        free, total = torch.cuda.mem_get_info()
        self.total = total
        self.min_free = free if self.min_free is None else min(self.min_free, free)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def stop(self) -> tuple[float | None, float | None]:
        """(system peak MB, total MB), or (None, None) without CUDA."""
        self._stop.set()
        if self._thread is None:
            return None, None
        self._thread.join(timeout=5)
        self._poll()
        return (self.total - self.min_free) / 2**20, self.total / 2**20
