"""GPU telemetry through a provider interface: a fake NVML, the real pynvml import path, no GPU."""

import sys
import time

import pytest

from lib_speedkit.bench.telemetry import (
    GpuReading,
    NvmlProvider,
    TelemetrySampler,
    TelemetryUnavailable,
    open_gpu_provider,
)


class FakeNvml:
    """Just the NVML calls NvmlProvider makes, with scripted utilisation."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, utilisations, fail_init=False):
        self.utilisations = list(utilisations)
        self.fail_init = fail_init
        self.shut_down = False

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, handle):
        value = self.utilisations.pop(0) if len(self.utilisations) > 1 else self.utilisations[0]
        return type("Rates", (), {"gpu": value})()

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"used": 4 * 2**30})()

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetPowerUsage(self, handle):
        return 350_000

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 61

    def nvmlShutdown(self):
        self.shut_down = True


def test_nvml_provider_reads_every_metric():
    provider = NvmlProvider(0, FakeNvml([40]))
    assert provider.name == "NVIDIA H100 80GB HBM3"
    assert provider.read() == GpuReading(40.0, 4 * 2**30, 1980.0, 350.0, 61.0)


def test_nvml_failing_to_start_is_unavailable_with_the_reason():
    with pytest.raises(TelemetryUnavailable, match="Shared Library Not Found"):
        NvmlProvider(0, FakeNvml([0], fail_init=True))


def test_without_the_pynvml_package_telemetry_is_unavailable_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    provider, reason = open_gpu_provider()
    assert provider is None and "nvidia-ml-py" in reason


def test_sampler_summarises_only_the_sampling_windows():
    provider = NvmlProvider(0, FakeNvml([10, 10, 10] + [90] * 1000))
    sampler = TelemetrySampler(provider, interval=0.005, cpu_meter=lambda: 50.0).start()
    time.sleep(0.05)
    start = time.perf_counter()
    time.sleep(0.1)
    end = time.perf_counter()
    report = sampler.report([(start, end)])
    assert report.samples >= 3
    assert report.metrics["utilisation_percent"]["min"] == 90.0  # the early 10 % samples are outside
    assert report.cpu_percent == 50.0 and report.gpu_name == "NVIDIA H100 80GB HBM3"


def test_no_gpu_gives_n_a_with_the_reason():
    report = TelemetrySampler(None, unavailable="no NVIDIA GPU").start().report()
    assert report.samples == 0 and report.unavailable == "no NVIDIA GPU"
    assert report.metrics["utilisation_percent"] is None and report.mean("utilisation_percent") is None
    assert report.cpu_unavailable == "psutil is not installed"
