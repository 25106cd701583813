"""One walk over a model's modules per Speedkit hook.

Each of Speedkit's hooks looks at every module of the UNet several times: the graph's key and its
blockers, channels-last's 4-D weights, the compiled forward's weight layout, the Lora built-in's
merge. `nn.Module.named_modules` recurses through generators: one walk over an SD1.5 UNet's 843
modules costs 0.6–0.9 ms of Python, and a generation made about ten of them (measured on an H200's
host: Speedkit's own work was 22.7 ms per 512² generation, most of it walks).

Inside `walk_once()` the first walk of a model is kept and every later one in the block reuses
it; outside, each call walks afresh. Only the list of modules is kept: their classes, forwards,
tensors and attributes are read anew at every use. So a block must not add or remove submodules
while it runs; Speedkit's own patches never do (they swap classes, forwards and tensors, and a
host's hooks call no code that loads a model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_KEPT: ContextVar[dict[int, tuple[torch.nn.Module, list]] | None] = ContextVar("speedkit_module_walk", default=None)


@contextmanager
def walk_once() -> Iterator[None]:
    """Walk each model once until the block ends (a nested block shares the outer one's walks)."""
    if _KEPT.get() is not None:
        yield
        return
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


def named_modules(root: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """`root.named_modules()` as a list: the block's kept walk inside `walk_once`."""
    kept = _KEPT.get()
    if kept is None:
        return list(root.named_modules())
    entry = kept.get(id(root))
    if entry is None or entry[0] is not root:
        entry = kept[id(root)] = (root, list(root.named_modules()))
    return entry[1]


def modules(root: torch.nn.Module) -> list[torch.nn.Module]:
    """`root.modules()` as a list: the block's kept walk inside `walk_once`."""
    return [module for _name, module in named_modules(root)]
