"""Precompile requests: which sizes and batch sizes, with which switches (the CUDA graph and the
compiled UNet always on), bad input named by field; the tab's section and its report."""

from __future__ import annotations

import pytest

from lib_speedkit.errors import PlanError
from lib_speedkit.plan import AttentionConfig, ChannelsLastConfig, SpeedPlan
from lib_speedkit.precompile import (
    MAX_SHAPES,
    parse_batch_sizes,
    parse_sizes,
    precompile_request,
    precompile_request_from_body,
    result_markdown,
)
from lib_speedkit.script_args import ARG_NAMES


@pytest.mark.parametrize(
    ("value", "sizes"),
    [
        ("512x512", ((512, 512),)),
        ("512x768, 1024×1024; 512X512", ((512, 768), (1024, 1024), (512, 512))),
        (["768x512", [1024, 576]], ((768, 512), (1024, 576))),
        ("512x512 512x512", ((512, 512),)),  # once each
    ],
)
def test_sizes_are_read_from_text_or_lists(value, sizes):
    assert parse_sizes(value) == sizes


@pytest.mark.parametrize(
    ("value", "field"),
    [("", "sizes"), ("512x512, 500x512", "sizes[1]"), ("4096x512", "sizes[0]"), ([[512]], "sizes[0]"), (5, "sizes")],
)
def test_bad_sizes_name_the_item(value, field):
    with pytest.raises(PlanError) as error:
        parse_sizes(value)
    assert error.value.field == field and "WIDTHxHEIGHT" in error.value.allowed


def test_batch_sizes_from_1_to_8():
    assert parse_batch_sizes("1, 4") == (1, 4) and parse_batch_sizes([2, 2]) == (2,)
    for bad, field in (
        ("0", "batch_sizes[0]"),
        ([1, 9], "batch_sizes[1]"),
        ([1.5], "batch_sizes[0]"),
        ("", "batch_sizes"),
    ):
        with pytest.raises(PlanError, match=r"batch sizes from 1 to 8") as error:
            parse_batch_sizes(bad)
        assert error.value.field == field


def test_the_default_switches_are_the_lossless_mode_with_graph_and_compile():
    request = precompile_request("512x512, 1024x1024", "1, 4", None, unavailable={"sdp": "not here"})
    assert request.shapes == [(512, 512, 1), (512, 512, 4), (1024, 1024, 1), (1024, 1024, 4)]
    plan = request.plan
    assert plan.cuda_graph.enabled and plan.compile.enabled and plan.channels_last.enabled and plan.lean_step.enabled
    assert plan.attention.backend != "sdp"  # the mode's fastest backend available in this WebUI


def test_the_users_switches_are_kept_and_graph_and_compile_switched_on():
    plan = SpeedPlan(AttentionConfig("sdp-math"), channels_last=ChannelsLastConfig(False))
    request = precompile_request("512x512", "1", plan)
    assert request.plan.attention.backend == "sdp-math" and not request.plan.channels_last.enabled
    assert request.plan.cuda_graph.enabled and request.plan.compile.enabled


def test_too_many_shapes_are_refused():
    sizes = ", ".join(f"{64 * (i + 1)}x512" for i in range(MAX_SHAPES // 2 + 1))
    with pytest.raises(PlanError, match=f"at most {MAX_SHAPES}"):
        precompile_request(sizes, "1, 2", None)


def test_a_rest_body_is_checked_field_by_field():
    request = precompile_request_from_body({"sizes": ["512x768"], "batch_sizes": [1]})
    assert request.shapes == [(512, 768, 1)]
    assert precompile_request_from_body({}).shapes == [(512, 512, 1)]
    for body, field in (
        ({"size": "512x512"}, "size"),
        ({"speedkit": [False]}, "speedkit"),
        ({"speedkit": "lossless"}, "speedkit"),
        ({"sizes": "abc"}, "sizes[0]"),
        ([], "body"),
    ):
        with pytest.raises(PlanError) as error:
            precompile_request_from_body(body)
        assert error.value.field == field


def test_the_report_lists_each_shape_and_the_cached_graphs():
    result = {
        "shapes": [
            {
                "width": 512,
                "height": 512,
                "batch_size": 1,
                "seconds": 64.2,
                "compile_seconds": 60.1,
                "compiled": True,
                "notes": [],
            },
            {
                "width": 768,
                "height": 512,
                "batch_size": 1,
                "seconds": 3.0,
                "compile_seconds": 0,
                "compiled": False,
                "notes": ["n"],
            },
        ],
        "interrupted": True,
        "compiled_graphs": [{"what": "UNet", "latent": [2, 4, 64, 64], "mb": 120.4}],
    }
    text = result_markdown(result)
    assert "| 512×512 | 1 | 64.2 | 60.1 | yes |  |" in text and "| 768×512 | 1 | 3.0 | 0 | no | n |" in text
    assert "Interrupted" in text and "1 compiled graph(s) cached now, 120 MB." in text


def test_the_tab_has_a_precompile_section_wired_to_the_switches():
    from test_ui import tab_blocks, tab_host

    from lib_speedkit.ui_tab import build_bench_tab

    tab = build_bench_tab(tab_host(precompile=lambda *args: (None, "")))
    blocks = tab_blocks(tab)
    assert blocks["speedkit_precompile"].open is False and blocks["speedkit_precompile_sizes"].value == "512x512"
    (click,) = [d for d in tab.config["dependencies"] if blocks["speedkit_precompile_run"]._id in d["targets"]]
    assert len(click["inputs"]) == 2 + len(ARG_NAMES)
    # the report last: the WebUI's queue wrapper appends "Time taken" to the last output
    assert click["outputs"] == [blocks["speedkit_precompile_json"]._id, blocks["speedkit_precompile_report"]._id]
