"""A stand-in WebUI for the engine's CPU tests: the HostHooks the WebUI adapter builds, with the
host's parts played by small honest fakes.

* attention by title: the host's "titles" are the library backends; switching a title applies
  that backend to the UNet (as the WebUI's optimizers patch CrossAttention.forward);
* the Lora built-in: wrappers on torch.nn.Linear/Conv2d.forward that count their calls (as the
  built-in's network_*_forward wrap every layer); `networks_loaded` blocks the lean step;
* CUDA graphs: the freezing stand-in capturer of test_cuda_graph;
* the compiler: one that records what it was given and returns it unchanged (torch.compile's
  inductor needs a GPU; its numerics are measured on one, docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lib_speedkit.appliers import HostHooks
from lib_speedkit.attention import BACKENDS, apply_attention
from lib_speedkit.compiled import Compiler
from lib_speedkit.cuda_graph import GraphCache, module_fingerprint
from lib_speedkit.errors import BackendUnavailable
from lib_speedkit.tome import tome_settings_key
from lib_speedkit.undo import Undo

WRAPPED_CLASSES = (torch.nn.Linear, torch.nn.Conv2d)


def cpu_backends() -> list[str]:
    """The library backends that run on this CPU (the fake host offers them as its titles)."""
    return [name for name, backend in BACKENDS.items() if backend.is_available("cpu", torch.float32, 8)]


INITIAL_TITLE = "Doggettx (host)"  # the host's own backend: the UNet as built


@dataclass
class FakeHost:
    unet: torch.nn.Module
    graphs: GraphCache
    titles: dict[str, str] = field(default_factory=lambda: {name: f"{name} (host)" for name in cpu_backends()})
    title: str = INITIAL_TITLE
    networks_loaded: bool = False
    wrapper_calls: list[str] = field(default_factory=list)
    cutoff_threshold: list[float] = field(default_factory=list)  # the host part of a sigma cutoff
    compiled: list = field(default_factory=list)  # the forwards the host's compiler was given
    compiler: Compiler = None
    _attention_undo: Undo | None = None
    _originals: dict[type, object] = field(default_factory=dict)
    _wrappers: dict[type, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.compiler is None:
            self.compiler = Compiler(compile_fn=self._record_compile)

    def _record_compile(self, forward):
        self.compiled.append(forward)
        return forward

    # -- the Lora built-in's class-level wrappers
    def install_wrappers(self) -> None:
        for cls in WRAPPED_CLASSES:
            original = cls.forward
            self._originals[cls] = original

            def wrapper(module, *args, _original=original, _name=cls.__name__, **kwargs):
                self.wrapper_calls.append(_name)
                return _original(module, *args, **kwargs)

            cls.forward = wrapper
            self._wrappers[cls] = wrapper

    def remove_wrappers(self) -> None:
        for cls, original in self._originals.items():
            cls.forward = original
        self._originals.clear()
        self._wrappers.clear()

    def class_forwards(self) -> dict[type, object]:
        return {cls: cls.forward for cls in WRAPPED_CLASSES}

    # -- attention by title
    def backend_title(self, name: str) -> str:
        if name not in self.titles:
            raise BackendUnavailable(name, "the fake host does not offer it")
        return self.titles[name]

    def switch_title(self, title: str) -> None:
        if self._attention_undo is not None:
            self._attention_undo()
            self._attention_undo = None
        if title != INITIAL_TITLE:
            name = next(name for name, t in self.titles.items() if t == title)
            self._attention_undo = apply_attention(self.unet, name, None)
        self.title = title

    def hooks(self) -> HostHooks:
        def host_cutoff(config):
            self.cutoff_threshold.append(config.value)
            return Undo(self.cutoff_threshold.pop, "host cutoff")

        return HostHooks(
            backend_title=self.backend_title,
            current_title=lambda: self.title,
            switch_title=self.switch_title,
            check_backend=lambda name: None,
            cutoff_blocker=lambda config: None,
            host_cutoff=host_cutoff,
            graphs=self.graphs,
            graph_blocker=lambda: "networks loaded" if self.networks_loaded else None,
            graph_key=lambda unet: (module_fingerprint(unet), tome_settings_key(unet), self.title),
            forward_keyed=lambda name, forward: False,
            lean_blocker=lambda: "networks loaded" if self.networks_loaded else None,
            wrapped_forwards=lambda: [(cls, self._wrappers[cls], self._originals[cls]) for cls in self._originals],
            compiler=self.compiler,
        )
