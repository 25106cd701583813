"""A slimming request from the WebUI (REST body or tab): one home for its options, and unsafe
unpickling is never something a request body can ask for."""

from __future__ import annotations

import pytest

from lib_speedkit.errors import PlanError
from lib_speedkit.slim import SlimConfig
from lib_speedkit.slim.request import BODY_FIELDS, SlimChecks, request_from_body, tab_allows_unsafe_pickles


def test_a_body_with_only_the_checkpoint_takes_every_default_from_the_configs():
    request = request_from_body({"checkpoint": "model.safetensors [abc]"})
    assert request.config == SlimConfig() and request.checks == SlimChecks() and request.vae == "None"


def test_body_fields_go_to_the_conversion_and_to_the_checks():
    request = request_from_body({"checkpoint": "m", "dtype": "bf16", "suffix": "-small", "steps": 4, "size": 128})
    assert (request.config.dtype, request.config.suffix) == ("bf16", "-small")
    assert (request.checks.steps, request.checks.size) == (4, 128)


@pytest.mark.parametrize("value", [True, False, "yes"])
def test_unsafe_unpickling_cannot_be_requested_in_a_body(value):
    with pytest.raises(PlanError) as raised:
        request_from_body({"checkpoint": "m", "allow_unsafe_pickle": value})
    assert raised.value.field == "allow_unsafe_pickle" and "not accepted over HTTP" in str(raised.value)
    assert "allow_unsafe_pickle" not in BODY_FIELDS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "checkpoint"),
        ({"checkpoint": ""}, "checkpoint"),
        ({"checkpoint": 3}, "checkpoint"),
        ({"checkpoint": "m", "vae": 1}, "vae"),
        ({"checkpoint": "m", "colour": "red"}, "colour"),
        ({"checkpoint": "m", "dtype": "fp8"}, "dtype"),
        ({"checkpoint": "m", "suffix": "/../../evil"}, "suffix"),
        ({"checkpoint": "m", "prune": "yes"}, "prune"),
        ({"checkpoint": "m", "steps": 0}, "steps"),
        ({"checkpoint": "m", "steps": True}, "steps"),
        ({"checkpoint": "m", "size": 100}, "size"),
        ({"checkpoint": "m", "load_test": 1}, "load_test"),
    ],
)
def test_bad_bodies_name_the_field(body, field):
    with pytest.raises(PlanError) as raised:
        request_from_body(body)
    assert raised.value.field == field


def test_the_tab_reads_unsafe_pickles_only_when_ticked_and_confirmed():
    assert tab_allows_unsafe_pickles(False, False, None) is False
    assert tab_allows_unsafe_pickles(False, True, "reachable from the network") is False
    assert tab_allows_unsafe_pickles(True, True, None) is True
    with pytest.raises(PlanError, match="tick the confirmation"):
        tab_allows_unsafe_pickles(True, False, None)
    with pytest.raises(PlanError, match="reachable from the network"):
        tab_allows_unsafe_pickles(True, True, "reachable from the network")
