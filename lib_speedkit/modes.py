"""Speed modes: named sets of script-arg values, so one click picks a sensible combination.

  Off       nothing changes
  Lossless  everything that leaves the image within fp16 rounding: the fastest attention kernel
            available, the CUDA graph, channels-last, the lean step
  Fast      Lossless + the negative prompt stops after half of the steps (a small visible change)
  Fastest   Fast + token merging at 0.5 (fine detail changes visibly)
  Custom    the settings under "Advanced", as set by hand

A mode is data over the setting specs (script_args.SCRIPT_ARGS): `resolve_mode` turns it into
argument values for this WebUI, leaving out what cannot run here (an unavailable backend or
switch), so a mode never asks for something that would be refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OFF = "Off"
CUSTOM = "Custom"
ATTENTION_PREFERENCE = ("sdp", "xformers")
"""The attention a mode picks: the first of these this WebUI can run (else the configured one).
PyTorch's SDPA picks FlashAttention or the memory-efficient kernel by itself on CUDA GPUs."""


@dataclass(frozen=True)
class SpeedMode:
    """A named mode: what it sets (script-arg values on top of the defaults) and what it costs."""

    name: str
    cost: str
    settings: dict[str, object] = field(default_factory=dict)
    fastest_attention: bool = False


LOSSLESS = {"channels_last": True, "cuda_graph": True, "lean_step": True}
FAST = {**LOSSLESS, "cutoff_mode": "fraction", "cutoff_value": 0.5}
FASTEST = {**FAST, "tome_ratio": 0.5}

MODES: dict[str, SpeedMode] = {
    mode.name: mode
    for mode in (
        SpeedMode(OFF, "Speedkit changes nothing."),
        SpeedMode(
            "Lossless",
            "Same image within fp16 rounding. Keeps about one UNet call of VRAM for CUDA graphs; the first "
            "image at a new size or batch captures one (a fraction of a second).",
            LOSSLESS,
            fastest_attention=True,
        ),
        SpeedMode(
            "Fast",
            "Lossless + the negative prompt stops after half of the steps: a small visible change in detail.",
            FAST,
            fastest_attention=True,
        ),
        SpeedMode(
            "Fastest",
            "Fast + token merging 0.5: fine detail changes visibly; a little less attention memory.",
            FASTEST,
            fastest_attention=True,
        ),
        SpeedMode(CUSTOM, "The settings under Advanced, as you set them."),
    )
}
MODE_NAMES = tuple(MODES)
NAMED_MODES = tuple(name for name in MODE_NAMES if name not in (OFF, CUSTOM))


def canonical_mode(name: object) -> str | None:
    """The mode called `name` (any case), or None."""
    if not isinstance(name, str):
        return None
    return next((mode for mode in MODE_NAMES if mode.lower() == name.strip().lower()), None)


def resolve_mode(name: str, unavailable: Mapping[str, str] | None = None) -> dict[str, object]:
    """The script-arg values mode `name` sets in this WebUI (`unavailable`: name -> reason, for
    backends and switches such as "cuda_graph" or "cutoff_mode" that cannot run here)."""
    unavailable = unavailable or {}
    mode = MODES[name]
    values = {key: value for key, value in mode.settings.items() if key not in unavailable}
    if "cutoff_mode" in unavailable:
        values.pop("cutoff_value", None)
    if mode.fastest_attention:
        values["attention"] = next((b for b in ATTENTION_PREFERENCE if b not in unavailable), "keep")
    return values
