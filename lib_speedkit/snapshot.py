"""Snapshots of a module's patchable state, to prove that an undo restored everything.

A snapshot records, per submodule: its class, its instance-level `forward` (if any), its other
instance attributes (names), its hooks, and every parameter/buffer's dtype, device, strides and
(optionally) values; plus the class-level `forward` of every class involved. `diff` lists what
changed in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
_TORCH_INTERNALS = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", *_HOOK_DICTS}


@dataclass(frozen=True)
class TensorRecord:
    dtype: torch.dtype
    device: torch.device
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    values: torch.Tensor | None


@dataclass(frozen=True)
class ModuleRecord:
    cls: type
    instance_forward: object
    attributes: frozenset[str]
    hooks: tuple[tuple[str, tuple[tuple[object, object], ...]], ...]


@dataclass(frozen=True)
class ModuleSnapshot:
    modules: dict[str, ModuleRecord]
    tensors: dict[str, TensorRecord]
    class_forwards: dict[type, object]

    @classmethod
    def capture(cls, model: torch.nn.Module, with_values: bool = True) -> ModuleSnapshot:
        modules = {name: _module_record(module) for name, module in model.named_modules()}
        tensors = {name: _tensor_record(t, with_values) for name, t in _named_tensors(model)}
        class_forwards = {}
        for record in modules.values():
            for klass in record.cls.__mro__:
                if "forward" in klass.__dict__:
                    class_forwards[klass] = klass.__dict__["forward"]
        return cls(modules, tensors, class_forwards)

    def diff(self, other: ModuleSnapshot) -> list[str]:
        """What differs in `other` compared with this snapshot (empty: identical)."""
        problems = _diff_keys("module", self.modules, other.modules)
        problems += _diff_keys("tensor", self.tensors, other.tensors)
        for name in self.modules.keys() & other.modules.keys():
            problems += _diff_module(name, self.modules[name], other.modules[name])
        for name in self.tensors.keys() & other.tensors.keys():
            problems += _diff_tensor(name, self.tensors[name], other.tensors[name])
        for klass, forward in self.class_forwards.items():
            if klass.__dict__.get("forward") is not forward:
                problems.append(f"class {klass.__qualname__}: forward replaced")
        return problems


def _named_tensors(model: torch.nn.Module):
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def _module_record(module: torch.nn.Module) -> ModuleRecord:
    attributes = frozenset(k for k in module.__dict__ if k not in _TORCH_INTERNALS)
    hooks = tuple(
        (hook_dict, tuple(getattr(module, hook_dict).items()))
        for hook_dict in _HOOK_DICTS
        if isinstance(getattr(module, hook_dict, None), dict)
    )
    return ModuleRecord(type(module), module.__dict__.get("forward"), attributes, hooks)


def _tensor_record(tensor: torch.Tensor, with_values: bool) -> TensorRecord:
    values = tensor.detach().clone() if with_values else None
    return TensorRecord(tensor.dtype, tensor.device, tuple(tensor.shape), tensor.stride(), values)


def _diff_keys(kind: str, before: dict, after: dict) -> list[str]:
    return [f"{kind} {name!r} removed" for name in before.keys() - after.keys()] + [
        f"{kind} {name!r} added" for name in after.keys() - before.keys()
    ]


def _diff_module(name: str, before: ModuleRecord, after: ModuleRecord) -> list[str]:
    label = name or "<root>"
    problems = []
    if before.cls is not after.cls:
        problems.append(f"{label}: class {before.cls.__name__} -> {after.cls.__name__}")
    if before.instance_forward is not after.instance_forward:
        problems.append(f"{label}: instance forward changed")
    if before.attributes != after.attributes:
        changed = sorted(before.attributes ^ after.attributes)
        problems.append(f"{label}: instance attributes differ: {changed}")
    if before.hooks != after.hooks:
        problems.append(f"{label}: hooks differ")
    return problems


def _diff_tensor(name: str, before: TensorRecord, after: TensorRecord) -> list[str]:
    problems = []
    for attribute in ("dtype", "device", "shape", "stride"):
        if getattr(before, attribute) != getattr(after, attribute):
            problems.append(f"{name}: {attribute} {getattr(before, attribute)} -> {getattr(after, attribute)}")
    if before.values is not None and after.values is not None and not torch.equal(before.values, after.values):
        problems.append(f"{name}: values changed")
    return problems
