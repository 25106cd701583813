"""A module compiled without a CUDA graph (the VAE decoder under `compile_unet`): the module's own
forward through the Compiler (compiled.py: per module and weight layout, the first call of each
shape on the worker the caller waits for), with the module's own forward as the way back.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

import torch

from .compiled import Compiler
from .cuda_graph import refuse_foreign_forward


class CompiledModuleForward:
    """The instance forward `apply_compiled_module` installs: the module's own forward compiled,
    without a CUDA graph (for a module that runs once per image, such as the VAE decoder, whose
    graph would hold its large working memory for good). Calls from other threads (a live preview)
    and calls while the compile is not ready run the module's own forward; a failure of the
    compiled code other than running out of memory runs it too, for the rest of the apply."""

    speedkit_wrapper = "speedkit-compiled-module"

    def __init__(self, module: torch.nn.Module, compiler: Compiler, name: Hashable):
        self.module, self.compiler, self.name = module, compiler, name
        self.eager_forward = type(module).forward.__get__(module)
        self.thread = threading.get_ident()
        self.compiled_calls = 0
        self.eager_calls: dict[str, int] = {}
        self.failure: str | None = None

    def __call__(self, *args, **kwargs):
        reason = self.failure
        if reason is None and threading.get_ident() != self.thread:
            reason = "called from another thread (a live preview)"
        if reason is None:
            try:
                compiled = self.compiler(self.module, self.name, self.eager_forward)
                reason = self.compiler.ready(compiled, args, kwargs)  # compiles the first time
                if reason is None:
                    output = compiled(*args, **kwargs)
                    self.compiled_calls += 1
                    return output
            except torch.OutOfMemoryError:
                raise
            except Exception as error:  # noqa: BLE001 - compiled code failed: the module's own forward instead
                reason = self.failure = f"the compiled code failed: {type(error).__name__}: {str(error)[:200]}"
        self.eager_calls[reason] = self.eager_calls.get(reason, 0) + 1
        return self.eager_forward(*args, **kwargs)


def apply_compiled_module(module: torch.nn.Module, compiler: Compiler, name: Hashable) -> CompiledModuleForward:
    """Run `module`'s forward compiled (see CompiledModuleForward) until `remove_compiled_module`.
    Refuses (SpeedkitError) when something else already replaced the forward on the instance;
    applying twice is safe (the newer one replaces the older)."""
    existing = module.__dict__.get("forward")
    if isinstance(existing, CompiledModuleForward):
        del module.__dict__["forward"]
    else:
        refuse_foreign_forward(module, existing)
    compiler.use_layout(module)
    wrapper = CompiledModuleForward(module, compiler, name)
    module.forward = wrapper
    return wrapper


def remove_compiled_module(wrapper: CompiledModuleForward) -> None:
    if wrapper.module.__dict__.get("forward") is wrapper:
        del wrapper.module.__dict__["forward"]
