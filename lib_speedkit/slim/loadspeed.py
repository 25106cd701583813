"""How fast a checkpoint file can be read: cold (page cache dropped) and warm, in MB/s.

Loading a checkpoint starts by reading the whole file; at 2-7 GB that alone can take longer than
everything after it when the disk is slow. The cold read drops the file's pages from the page cache
first with `posix_fadvise(POSIX_FADV_DONTNEED)` (Linux; it drops clean pages only, so the file is
fsync'ed first). Where that call does not exist the measurement says "warm only".
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHUNK_BYTES = 16 * 2**20
SLOW_STORAGE_MB_S = 200.0  # below this the disk, not the GPU, limits switching models


@dataclass(frozen=True)
class ReadMeasurement:
    cache: str  # "cold" | "warm"
    seconds: float
    megabytes: float

    @property
    def mb_per_s(self) -> float:
        return self.megabytes / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict:
        return asdict(self) | {"mb_per_s": round(self.mb_per_s, 1)}


def drop_page_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's cached pages; False where that is not possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def time_read(path: Path, cache: str) -> ReadMeasurement:
    """Read the whole file once through a reused buffer (no memory growth) and time it."""
    buffer = bytearray(CHUNK_BYTES)
    total = 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            total += count
    return ReadMeasurement(cache, time.perf_counter() - started, total / 1e6)


def storage_hint(measurement: ReadMeasurement) -> str | None:
    """The advice to show when reading the file is slow enough to dominate model switching."""
    if measurement.cache != "cold" or measurement.mb_per_s >= SLOW_STORAGE_MB_S:
        return None
    return (
        f"Storage is the bottleneck: reading this {measurement.megabytes / 1000:.1f} GB file takes "
        f"{measurement.seconds:.1f} s at {measurement.mb_per_s:.0f} MB/s (under {SLOW_STORAGE_MB_S:.0f} MB/s) "
        "before the GPU sees a byte. A smaller (fp16, pruned) file or a faster disk (SSD/NVMe) helps more "
        "than any GPU setting."
    )


def measure_load_speed(path: str | Path) -> dict:
    """Cold (where possible) and warm read of `path`; a dict for reports and the bench record."""
    path = Path(path)
    record: dict = {"file": str(path), "bytes": path.stat().st_size, "measured_at": time.time()}
    cold = time_read(path, "cold") if drop_page_cache(path) else None
    warm = time_read(path, "warm")
    record["cold"] = cold.as_dict() if cold else None
    record["warm"] = warm.as_dict()
    record["note"] = None if cold else "warm only: this system cannot drop a file from the page cache"
    record["hint"] = storage_hint(cold) if cold else None
    return record


class LoadSpeedLog:
    """The last measurement per file (JSON), so the bench's environment record can include it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @staticmethod
    def _key(file: str | Path) -> str:
        stat = Path(file).stat()
        return f"{os.path.realpath(file)}|{stat.st_size}|{int(stat.st_mtime)}"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, measurement: dict) -> None:
        data = self._read()
        data[self._key(measurement["file"])] = measurement
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(partial, self.path)

    def lookup(self, file: str | Path) -> dict | None:
        """The last measurement of this exact file (same path, size and mtime), or None."""
        try:
            return self._read().get(self._key(file))
        except OSError:
            return None
