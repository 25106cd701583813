"""Errors raised by lib_speedkit.

Every error a user can cause names the field or the backend it is about, so the WebUI can show it
(or the API can return it as HTTP 422) without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


def code_name(function: object) -> str:
    """`module.qualname` of a function, a bound method or a callable object: how a message names
    the code (another extension's) that stands in Speedkit's way."""
    code = getattr(function, "__func__", function)
    if not hasattr(code, "__qualname__"):
        code = type(code)
    return f"{getattr(code, '__module__', '?')}.{code.__qualname__}"


class SpeedkitError(Exception):
    """Base class of every error lib_speedkit raises on purpose."""


class PlanError(SpeedkitError, ValueError):
    """A SpeedPlan field has a value outside what is allowed.

    `field` is the dotted name of the field (``"tome.ratio"``), `allowed` a human-readable
    description of the allowed values (``"0 to 0.75"`` or ``"one of: sdp, v1"``).
    """

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: {value!r} is not allowed; expected {allowed}")


class BackendUnavailable(SpeedkitError, RuntimeError):
    """An attention backend cannot run here (or for this dtype/device/head size)."""

    def __init__(self, backend: str, reason: str):
        self.backend = backend
        self.reason = reason
        super().__init__(f"attention backend {backend!r} is unavailable: {reason}")


class FeatureSkipped(SpeedkitError):
    """A feature of a plan cannot apply here (a LoRA is loaded, no CUDA device, ...): it is left
    out, with `reason` noted, and the rest of the plan still applies."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class PatchConflict(SpeedkitError, RuntimeError):
    """The model already carries a patch that lib_speedkit did not make and would have to remove."""


def allowed_choices(choices: Iterable[object]) -> str:
    """Format a set of allowed values for an error message."""
    return "one of: " + ", ".join(str(c) for c in choices)
