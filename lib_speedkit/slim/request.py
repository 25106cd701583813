"""A slimming request as the WebUI takes it (the tab and `POST /speedkit/v1/slim`), host-free.

One home for every option: the conversion's own (`SlimConfig`) and the checks the WebUI runs
afterwards (`SlimChecks`); the REST body, the tab's defaults and the CLI read them from here.
Unsafe unpickling is never part of a request body: a request over HTTP cannot ask for it (the
WebUI's `--disable-safe-unpickle` decides, or the tab with its explicit confirmation).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from ..errors import PlanError
from .convert import SlimConfig

NO_VAE = "None"
UNSAFE_FIELD = "allow_unsafe_pickle"
UNSAFE_OVER_HTTP = (
    "not accepted over HTTP: unsafe pickles are read only when the WebUI runs with --disable-safe-unpickle, "
    "or from the Speedkit tab after its confirmation"
)
UNSAFE_NOT_CONFIRMED = "tick the confirmation that you trust this file (it can run any code on this computer)"
UNSAFE_TAB_LABEL = "allow unsafe pickles"
CHECK_SIZES = (64, 2048)
CHECK_STEPS = (1, 150)


@dataclass(frozen=True)
class SlimChecks:
    """What the WebUI checks after converting. Cost: the load test loads the new file into the
    WebUI (seconds, the model's VRAM while it is loaded) and loads the previous model back; the
    image comparison generates one image with each file (`steps` at `size`²); the read-speed test
    reads both files twice (cold and warm)."""

    load_test: bool = True
    compare_images: bool = False
    load_speed: bool = True
    steps: int = 20
    size: int = 512

    def __post_init__(self) -> None:
        for name in ("load_test", "compare_images", "load_speed"):
            if not isinstance(getattr(self, name), bool):
                raise PlanError(name, getattr(self, name), "true or false")
        low, high = CHECK_STEPS
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not low <= self.steps <= high:
            raise PlanError("steps", self.steps, f"an integer from {low} to {high}")
        low, high = CHECK_SIZES
        size = self.size
        if isinstance(size, bool) or not isinstance(size, int) or size % 64 or not low <= size <= high:
            raise PlanError("size", self.size, f"{low} to {high}, a multiple of 64")


@dataclass(frozen=True)
class SlimRequest:
    """Which checkpoint (and VAE to bake in) by WebUI list name or by a path inside the WebUI's
    model folders, the conversion's options and the checks. `config.vae` is filled in by the host
    once it has resolved `vae` to a file."""

    checkpoint: str
    vae: str = NO_VAE
    config: SlimConfig = field(default_factory=SlimConfig)
    checks: SlimChecks = field(default_factory=SlimChecks)

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint, str) or not self.checkpoint.strip():
            raise PlanError("checkpoint", self.checkpoint, "a checkpoint from the WebUI's list")
        if not isinstance(self.vae, str):
            raise PlanError("vae", self.vae, "a VAE from the WebUI's list, or None")


CONFIG_FIELDS = tuple(f.name for f in fields(SlimConfig) if f.name not in ("vae", UNSAFE_FIELD))
CHECK_FIELDS = tuple(f.name for f in fields(SlimChecks))
BODY_FIELDS = ("checkpoint", "vae", *CONFIG_FIELDS, *CHECK_FIELDS)


def request_from_body(body: object) -> SlimRequest:
    """Validate a POST /speedkit/v1/slim body (flat JSON); PlanError names the field."""
    if not isinstance(body, dict):
        raise PlanError("body", body, "a JSON object")
    if UNSAFE_FIELD in body:
        raise PlanError(UNSAFE_FIELD, body[UNSAFE_FIELD], UNSAFE_OVER_HTTP)
    for key, value in body.items():
        if key not in BODY_FIELDS:
            raise PlanError(key, value, "one of: " + ", ".join(BODY_FIELDS))
    if "checkpoint" not in body:
        raise PlanError("checkpoint", None, "a checkpoint from the WebUI's list")
    config = replace(SlimConfig(), **{k: body[k] for k in CONFIG_FIELDS if k in body})
    checks = SlimChecks(**{k: body[k] for k in CHECK_FIELDS if k in body})
    return SlimRequest(body["checkpoint"], body.get("vae", NO_VAE), config, checks)


def tab_allows_unsafe_pickles(ticked: bool, confirmed: bool, blocked: str | None) -> bool:
    """The tab's choice: unsafe pickles only when the box is ticked AND the confirmation too, and
    the WebUI does not forbid it (`blocked` says why it does); PlanError otherwise."""
    if not ticked:
        return False
    if blocked:
        raise PlanError(UNSAFE_TAB_LABEL, True, blocked)
    if not confirmed:
        raise PlanError(UNSAFE_TAB_LABEL, True, UNSAFE_NOT_CONFIRMED)
    return True
