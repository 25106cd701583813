"""Undo handles: every patch in lib_speedkit returns one.

An :class:`Undo` runs its restore function at most once (calling it again is a no-op), and is a
context manager, so ``with apply_something(unet): ...`` restores on every exit path.

:class:`PatchSlots` gives "applying twice is safe": each (model, feature) pair has one slot; a new
application first undoes the one in the slot, so patches never stack. A superseded undo has already
run and stays a no-op, so it can never tear down the newer application.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable


class Undo:
    """Restores what one apply() changed. Idempotent; usable as a context manager."""

    __slots__ = ("_restore", "label")

    def __init__(self, restore: Callable[[], None] | None, label: str = ""):
        self._restore = restore
        self.label = label

    @classmethod
    def nothing(cls, label: str = "") -> Undo:
        """An undo for an apply() that changed nothing."""
        return cls(None, label)

    @property
    def pending(self) -> bool:
        """True while there is still something to restore."""
        return self._restore is not None

    def __call__(self) -> None:
        restore, self._restore = self._restore, None
        if restore is not None:
            restore()

    def __enter__(self) -> Undo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self()

    def __repr__(self) -> str:
        state = "pending" if self.pending else "done"
        return f"<Undo {self.label or 'patch'}: {state}>"


def run_in_reverse(undos: list[Undo]) -> None:
    """Run every undo in reverse order; re-raise the first error once all have run."""
    first_error: BaseException | None = None
    for undo in reversed(undos):
        try:
            undo()
        except BaseException as error:  # noqa: BLE001 - the rest must still be restored
            first_error = first_error or error
    if first_error is not None:
        raise first_error


class PatchSlots:
    """At most one live application per (model, feature); re-applying replaces the old one.

    Models are held weakly: a slot never keeps a model alive and adds no attribute to it.
    """

    def __init__(self) -> None:
        self._slots: weakref.WeakKeyDictionary[object, dict[str, Undo]] = weakref.WeakKeyDictionary()

    def release(self, model: object, feature: str) -> None:
        """Undo the live application of `feature` on `model`, if any."""
        slot = self._slots.get(model, {})
        undo = slot.pop(feature, None)
        if undo is not None:
            undo()

    def occupy(self, model: object, feature: str, restore: Callable[[], None], label: str) -> Undo:
        """Record a fresh application; its undo also frees the slot."""
        slot = self._slots.setdefault(model, {})
        undo_ref: list[Undo] = []

        def restore_and_free() -> None:
            if slot.get(feature) is undo_ref[0]:
                del slot[feature]
            restore()

        undo = Undo(restore_and_free, label)
        undo_ref.append(undo)
        slot[feature] = undo
        return undo

    def active(self, model: object, feature: str) -> bool:
        """True while `feature` is applied to `model` through these slots."""
        undo = self._slots.get(model, {}).get(feature)
        return undo is not None and undo.pending


SLOTS = PatchSlots()
"""The process-wide slots every lib_speedkit patch uses."""


class UndoStack:
    """The undos of one application, by name, in the order they were applied.

    `set(name, undo)` first runs the undo already held under `name` (re-applying a feature never
    stacks two applications); `drop(name)` runs one undo early; `unwind()` runs every undo in
    reverse order of application and empties the stack (every undo runs even if one raises; the
    first error is re-raised at the end).
    """

    def __init__(self) -> None:
        self._undos: dict[str, Undo] = {}

    def set(self, name: str, undo: Undo) -> None:
        self.drop(name)
        self._undos[name] = undo

    def drop(self, name: str) -> None:
        undo = self._undos.pop(name, None)
        if undo is not None:
            undo()

    def unwind(self) -> None:
        undos, self._undos = list(self._undos.values()), {}
        run_in_reverse(undos)

    def __contains__(self, name: object) -> bool:
        return name in self._undos

    def names(self) -> tuple[str, ...]:
        return tuple(self._undos)
