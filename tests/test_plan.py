"""SpeedPlan: validation names the field and the allowed values; infotext round-trips exactly."""

import math

import pytest
from hypothesis import given

from lib_speedkit.errors import PlanError
from lib_speedkit.plan import (
    AttentionConfig,
    ChannelsLastConfig,
    GuidanceCutoffConfig,
    SpeedPlan,
    TokenMergingConfig,
    canonical_backend_name,
    format_infotext,
    parse_infotext,
)
from strategies import valid_plans


def test_default_plan_changes_nothing_and_writes_no_infotext():
    assert SpeedPlan().is_noop
    assert format_infotext(SpeedPlan()) == {}


@pytest.mark.parametrize(
    ("build", "field", "allowed_fragment"),
    [
        (lambda: AttentionConfig("quantum"), "attention.backend", "sdp-flash"),
        (lambda: TokenMergingConfig(ratio=0.9), "tome.ratio", "0 to 0.75"),
        (lambda: TokenMergingConfig(ratio=-0.1), "tome.ratio", "0 to 0.75"),
        (lambda: TokenMergingConfig(ratio=math.nan), "tome.ratio", "0 to 0.75"),
        (lambda: TokenMergingConfig(ratio=True), "tome.ratio", "0 to 0.75"),
        (lambda: TokenMergingConfig(ratio=0.5, max_downsample=3), "tome.max_downsample", "1, 2, 4, 8"),
        (lambda: TokenMergingConfig(ratio=0.5, sx=0), "tome.sx", "1 to 8"),
        (lambda: TokenMergingConfig(ratio=0.5, sx=1, sy=1), "tome.ratio", "stride 1x1"),
        (lambda: TokenMergingConfig(ratio=0.5, use_rand="yes"), "tome.use_rand", "True or False"),
        (lambda: TokenMergingConfig(ratio=0.5, use_rand=True, seed=-1), "tome.seed", "from 0 to"),
        (lambda: TokenMergingConfig(ratio=0.5, use_rand=True, seed=2**64), "tome.seed", "2**64 - 1"),
        (lambda: GuidanceCutoffConfig("fraction", 1.5), "cutoff.value (fraction)", "0 to 1"),
        (lambda: GuidanceCutoffConfig("adaptive", -0.2), "cutoff.value (adaptive)", "0 to 1"),
        (lambda: GuidanceCutoffConfig("sigma", 0.0), "cutoff.value (sigma)", "sigma > 0"),
        (lambda: GuidanceCutoffConfig("sigma", math.inf), "cutoff.value (sigma)", "sigma > 0"),
        (lambda: GuidanceCutoffConfig("late"), "cutoff.mode", "fraction"),
        (lambda: ChannelsLastConfig(1), "channels_last.enabled", "True or False"),
        (lambda: SpeedPlan(tome=0.5), "tome", "TokenMergingConfig"),
    ],
)
def test_invalid_values_raise_an_error_naming_field_and_allowed_values(build, field, allowed_fragment):
    with pytest.raises(PlanError) as caught:
        build()
    assert caught.value.field == field
    assert allowed_fragment in caught.value.allowed
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("sdp - scaled dot product", "sdp"),
        ("sdp-no-mem - scaled dot product without memory efficient attention", "sdp-no-mem"),
        ("V1 - original v1", "v1"),
        ("Doggettx", "doggettx"),
        ("InvokeAI", "invokeai"),
        ("xformers", "xformers"),
        ("None", "none"),
    ],
)
def test_webui_optimizer_titles_map_to_backend_names(title, name):
    assert canonical_backend_name(title) == name
    assert AttentionConfig(title).backend == name


def test_disabled_features_carry_their_defaults():
    assert TokenMergingConfig(ratio=0, max_downsample=4, use_rand=True, seed=3) == TokenMergingConfig()
    assert GuidanceCutoffConfig("off", 0.7) == GuidanceCutoffConfig()
    assert TokenMergingConfig(ratio=0.4, use_rand=False, seed=9).seed is None


def test_hires_ratio_zero_or_equal_means_the_same_as_the_first_pass():
    assert TokenMergingConfig(ratio=0.5, hr_ratio=0.5).hr_ratio == 0.0
    assert TokenMergingConfig(ratio=0.5).for_hires_pass().ratio == 0.5
    hires = TokenMergingConfig(ratio=0.5, hr_ratio=0.3, max_downsample=2).for_hires_pass()
    assert (hires.ratio, hires.max_downsample) == (0.3, 2)
    assert format_infotext(SpeedPlan(tome=TokenMergingConfig(ratio=0.5, hr_ratio=0.3)))["Speedkit ToMe hr"] == "0.3"


def test_infotext_uses_speedkit_keys_for_non_default_values_only():
    plan = SpeedPlan(
        AttentionConfig("sdp-math"),
        GuidanceCutoffConfig("fraction", 0.75),
        TokenMergingConfig(ratio=0.5, max_downsample=2, use_rand=True, seed=42),
        ChannelsLastConfig(True),
    )
    assert format_infotext(plan) == {
        "Speedkit attention": "sdp-math",
        "Speedkit cutoff": "fraction 0.75",
        "Speedkit ToMe": "0.5",
        "Speedkit ToMe downsample": "2",
        "Speedkit ToMe random": "True",
        "Speedkit ToMe seed": "42",
        "Speedkit channels-last": "True",
    }
    assert not any(key in ("NGMS", "Token merging ratio") for key in format_infotext(plan))


@given(valid_plans)
def test_infotext_round_trips_exactly(plan):
    parsed = parse_infotext(format_infotext(plan))
    assert parsed.problems == ()
    assert parsed.plan == plan


def test_parsing_ignores_unknown_and_foreign_keys():
    params = {
        "Steps": "28",
        "NGMS": "1.5",
        "Speedkit attention": "sdp",
        "Speedkit teleport": "on",  # a key from a newer version
        "Speedkit ToMe": "0.3",
        "Speedkit ToMe merge mlp": "True",
    }
    parsed = parse_infotext(params)
    assert parsed.problems == ()
    assert parsed.plan == SpeedPlan(AttentionConfig("sdp"), tome=TokenMergingConfig(ratio=0.3))


def test_unreadable_values_are_reported_never_raised_and_the_rest_is_kept():
    params = {
        "Speedkit attention": "quantum",
        "Speedkit cutoff": "fraction lots",
        "Speedkit ToMe": "0.9",
        "Speedkit channels-last": "True",
    }
    parsed = parse_infotext(params)
    assert parsed.plan == SpeedPlan(channels_last=ChannelsLastConfig(True))
    assert [problem.split(":")[0] for problem in parsed.problems] == [
        "Speedkit attention",
        "Speedkit cutoff",
        "Speedkit ToMe",
    ]


def test_parsing_accepts_non_string_values_as_the_webui_parser_may_give():
    parsed = parse_infotext({"Speedkit ToMe": 0.5, "Speedkit ToMe downsample": 2, "Speedkit channels-last": True})
    expected_tome = TokenMergingConfig(ratio=0.5, max_downsample=2)
    assert parsed.plan == SpeedPlan(tome=expected_tome, channels_last=ChannelsLastConfig(True))


def test_integral_floats_from_json_are_accepted_for_integer_fields():
    assert TokenMergingConfig(ratio=0.5, max_downsample=2.0, sx=2.0).max_downsample == 2


def test_a_stride_split_by_the_webuis_parser_is_read_back():
    """A1111's parse_generation_parameters turns any "NxM" value into "<key>-1"/"<key>-2"."""
    params = {"Speedkit ToMe": "0.4", "Speedkit ToMe stride-1": "2", "Speedkit ToMe stride-2": "1"}
    parsed = parse_infotext(params)
    assert parsed.problems == () and (parsed.plan.tome.sx, parsed.plan.tome.sy) == (2, 1)


def test_a_compiled_unet_without_the_cuda_graph_is_refused_and_pasted_as_a_problem():
    from lib_speedkit.plan import CompileConfig, CudaGraphConfig

    with pytest.raises(PlanError, match=r"compile\.enabled: True is not allowed; expected only with cuda_graph on"):
        SpeedPlan(compile=CompileConfig(True))
    both = SpeedPlan(cuda_graph=CudaGraphConfig(True), compile=CompileConfig(True))
    assert format_infotext(both)["Speedkit compiled UNet"] == "True"
    assert parse_infotext(format_infotext(both)).plan == both
    alone = parse_infotext({"Speedkit compiled UNet": "True"})
    assert not alone.plan.compile.enabled
    assert alone.problems == ("Speedkit compiled UNet: only with Speedkit CUDA graph: True",)
