"""The environment stored with every result: hardware, drivers and libraries (host-independent
part; the WebUI adapter adds the WebUI version, flags, model and Speedkit state)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_record(device_index: int = 0) -> dict:
    if not torch.cuda.is_available():
        return {"name": None, "unavailable": "no CUDA device visible to torch"}
    props = torch.cuda.get_device_properties(device_index)
    return {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "vram_total_mb": round(props.total_memory / 2**20),
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
    }


def driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - any NVML problem means "unknown driver"
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def environment_record() -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "gpu": gpu_record(),
        "driver": driver_version(),
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "torch": torch.__version__,
        "xformers": _version("xformers"),
        "python": platform.python_version(),
        "os": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
