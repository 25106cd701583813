"""Undo handles: idempotent, reverse order, every restore runs even when one fails."""

import pytest

from lib_speedkit.undo import PatchSlots, Undo, UndoStack


def test_an_undo_runs_once():
    calls = []
    undo = Undo(lambda: calls.append(1))
    undo()
    undo()
    assert calls == [1] and not undo.pending


def test_a_stack_unwinds_in_reverse_order_and_every_undo_runs_despite_errors():
    calls = []

    def failing():
        calls.append("b")
        raise ValueError("b failed")

    stack = UndoStack()
    stack.set("a", Undo(lambda: calls.append("a")))
    stack.set("b", Undo(failing))
    stack.set("c", Undo(lambda: calls.append("c")))
    with pytest.raises(ValueError, match="b failed"):
        stack.unwind()
    assert calls == ["c", "b", "a"] and stack.names() == ()


def test_setting_a_name_again_first_undoes_what_it_held_and_drop_undoes_one_early():
    calls = []
    stack = UndoStack()
    stack.set("tome", Undo(lambda: calls.append("tome 0.5")))
    stack.set("graph", Undo(lambda: calls.append("graph")))
    stack.set("tome", Undo(lambda: calls.append("tome 0.3")))  # the hires pass's ratio
    assert calls == ["tome 0.5"] and stack.names() == ("graph", "tome")
    stack.drop("graph")
    stack.drop("graph")  # nothing held: nothing runs
    assert calls == ["tome 0.5", "graph"] and "graph" not in stack
    stack.unwind()
    assert calls == ["tome 0.5", "graph", "tome 0.3"]


def test_a_superseded_slot_undo_never_tears_down_the_newer_application():
    slots, calls = PatchSlots(), []

    class Model:
        pass

    model = Model()
    first = slots.occupy(model, "feature", lambda: calls.append("first"), "first")
    slots.release(model, "feature")
    second = slots.occupy(model, "feature", lambda: calls.append("second"), "second")
    first()  # already ran when released: a no-op now
    assert calls == ["first"] and not first.pending
    assert slots.active(model, "feature")
    second()
    assert calls == ["first", "second"] and not slots.active(model, "feature")
