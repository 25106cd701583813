"""Speed modes: one click to a sensible combination; they round-trip through infotext and paste."""

import pytest
from test_script_args import mode_args

from lib_speedkit.modes import MODES, NAMED_MODES, canonical_mode, resolve_mode
from lib_speedkit.plan import KEY_MODE, format_infotext, parse_infotext
from lib_speedkit.script_args import MODE_SWITCHES, plan_from_args
from lib_speedkit.ui import pasted_value, shown_values


def test_each_mode_states_its_cost_in_one_line():
    for mode in MODES.values():
        assert mode.cost and "\n" not in mode.cost


def test_the_modes_build_on_each_other():
    lossless, fast, fastest = (resolve_mode(name) for name in NAMED_MODES)
    assert lossless == {"attention": "sdp", "channels_last": True, "cuda_graph": True, "lean_step": True}
    assert fast == {**lossless, "cutoff_mode": "fraction", "cutoff_value": 0.5}
    assert fastest == {**fast, "tome_ratio": 0.5}
    assert set(fastest) <= set(MODE_SWITCHES)


def test_mode_names_are_read_in_any_case():
    assert canonical_mode("lossless") == "Lossless" and canonical_mode(" FASTEST ") == "Fastest"
    assert canonical_mode("turbo") is None and canonical_mode(None) is None


@pytest.mark.parametrize("mode", NAMED_MODES)
def test_a_mode_round_trips_through_infotext_with_its_resolved_switches(mode):
    plan = plan_from_args(mode_args(mode))
    entries = format_infotext(plan)
    assert entries[KEY_MODE] == mode
    assert parse_infotext(entries).plan == plan
    pasted = {name: pasted_value(name, entries) for name in ("enabled", "mode", "attention", "cuda_graph")}
    assert pasted == {"enabled": True, "mode": mode, "attention": "sdp", "cuda_graph": True}


def test_the_controls_shown_for_a_mode_are_its_resolved_switches():
    values = shown_values("Fastest", {"cuda_graph": "old torch"})
    assert values["tome_ratio"] == 0.5 and values["cuda_graph"] is False and values["cutoff_mode"] == "fraction"
    assert shown_values("Custom", {})["attention"] == "keep"


def test_an_unknown_mode_in_pasted_infotext_is_a_visible_problem():
    parsed = parse_infotext({KEY_MODE: "Turbo", "Speedkit ToMe": "0.5"})
    assert parsed.plan.mode == "Custom" and parsed.plan.tome.ratio == 0.5
    assert any("Speedkit mode" in problem for problem in parsed.problems)
