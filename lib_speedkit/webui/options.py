"""The WebUI's options, remembered and restored exactly, and seen differently for one call.

Speedkit never writes `shared.opts.data` while sampling: a settings save (Settings → Apply,
POST /sdapi/v1/options) at that moment would make the value permanent. Where the host's own
code must see another value for one call (the CFG denoiser's "skip early CFG" and "NGMS on all
steps"), `options_for_this_call` gives that module a view of `shared` whose `opts` answers those
values; the options themselves are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType

from modules import shared


def remember_options(keys: Iterable[str]) -> Callable[[], None]:
    """Remember WebUI options exactly (also "never set", which the host's own override restore
    forgets: it restores only keys already in opts.data); returns the function restoring them."""
    data = shared.opts.data
    saved = {key: (key in data, data.get(key)) for key in keys}

    def restore() -> None:
        for key, (had_key, previous) in saved.items():
            if had_key:
                data[key] = previous
            else:
                data.pop(key, None)

    return restore


class _OptionsView:
    """`shared.opts` with some values answered differently (read-only)."""

    def __init__(self, options, values: dict[str, object]):
        self._options = options
        self._values = values

    def __getattr__(self, name: str):
        if name in self._values:
            return self._values[name]
        return getattr(self._options, name)


class _SharedView:
    """`modules.shared` whose `opts` is an _OptionsView; everything else is the real one."""

    def __init__(self, real: ModuleType, values: dict[str, object]):
        self._real = real
        self.opts = _OptionsView(real.opts, values)

    def __getattr__(self, name: str):
        return getattr(self._real, name)


@contextmanager
def options_for_this_call(host_module: ModuleType, **values) -> Iterator[None]:
    """Inside the block, code of `host_module` (which reads options as `shared.opts.NAME`) sees
    `values`; nothing is written to the options, so nothing can be saved by accident."""
    real = host_module.shared
    host_module.shared = _SharedView(real, values)
    try:
        yield
    finally:
        host_module.shared = real


DEFAULT_MODE_OPTION = "speedkit_default_mode"


def add_settings() -> None:
    """on_ui_settings: Settings → Speedkit → the speed mode new generations start with."""
    import gradio as gr

    from ..modes import NAMED_MODES, OFF

    info = shared.OptionInfo(
        OFF,
        "Speed mode for new generations (Off: the Speedkit accordion starts closed)",
        gr.Radio,
        {"choices": [OFF, *NAMED_MODES]},
        section=("speedkit", "Speedkit"),
    )
    shared.opts.add_option(DEFAULT_MODE_OPTION, info.needs_reload_ui())
    from .fast_path import DEFAULT_GRAPH_BUDGET_MB, GRAPH_BUDGET_OPTION

    budget = shared.OptionInfo(
        DEFAULT_GRAPH_BUDGET_MB,
        "Memory the CUDA graphs may keep cached between generations, MB (least recently used dropped first)",
        gr.Slider,
        {"minimum": 64, "maximum": 16384, "step": 64},
        section=("speedkit", "Speedkit"),
    )
    shared.opts.add_option(GRAPH_BUDGET_OPTION, budget)


def default_mode() -> str:
    from ..modes import OFF

    return getattr(shared.opts, DEFAULT_MODE_OPTION, OFF) or OFF
