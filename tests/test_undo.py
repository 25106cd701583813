"""Undo handles: idempotent, reverse order, every restore runs even when one fails."""

import pytest

from lib_speedkit.undo import PatchSlots, Undo, combine


def test_an_undo_runs_once():
    calls = []
    undo = Undo(lambda: calls.append(1))
    undo()
    undo()
    assert calls == [1] and not undo.pending


def test_combined_undos_run_in_reverse_order_and_all_run_despite_errors():
    calls = []

    def failing():
        calls.append("b")
        raise ValueError("b failed")

    undo = combine([Undo(lambda: calls.append("a")), Undo(failing), Undo(lambda: calls.append("c"))])
    with pytest.raises(ValueError, match="b failed"):
        undo()
    assert calls == ["c", "b", "a"]


def test_reapplying_in_a_slot_undoes_the_previous_application_first():
    slots, calls = PatchSlots(), []

    class Model:
        pass

    model = Model()
    first = slots.occupy(model, "feature", lambda: calls.append("first"), "first")
    slots.release(model, "feature")
    second = slots.occupy(model, "feature", lambda: calls.append("second"), "second")
    assert calls == ["first"] and not first.pending
    assert slots.active(model, "feature")
    second()
    assert calls == ["first", "second"] and not slots.active(model, "feature")
