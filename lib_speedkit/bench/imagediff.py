"""How much two images differ: max pixel difference and PSNR (8-bit RGB)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageDifference:
    max_abs: int  # largest per-channel difference, 0..255
    mean_abs: float
    psnr_db: float  # inf when identical

    def as_dict(self) -> dict:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "psnr_db": None if math.isinf(self.psnr_db) else self.psnr_db,
            "identical": self.max_abs == 0,
        }


def to_array(image) -> np.ndarray:
    """uint8 H×W×3 array from a PIL image or an array."""
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an 8-bit RGB image, got {array.dtype} {array.shape}")
    return array


def compare(a, b) -> ImageDifference:
    first, second = to_array(a), to_array(b)
    if first.shape != second.shape:
        raise ValueError(f"images differ in size: {first.shape} vs {second.shape}")
    diff = np.abs(first.astype(np.int16) - second.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return ImageDifference(int(diff.max()), float(diff.mean()), psnr)


def image_digest(image) -> str | None:
    """SHA-256 of the image's 8-bit RGB pixels: equal digests mean bit-identical images, so runs
    of a history or of two benchmarks can be compared without keeping the images."""
    if image is None:
        return None
    return hashlib.sha256(to_array(image).tobytes()).hexdigest()
