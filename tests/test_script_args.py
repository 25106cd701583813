"""The script's positional args (UI order = API order) become a SpeedPlan, or a field-named error."""

import pytest
from hypothesis import given

from lib_speedkit.errors import PlanError
from lib_speedkit.plan import (
    AttentionConfig,
    ChannelsLastConfig,
    CudaGraphConfig,
    DeepCacheConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
    SpeedPlan,
    TokenMergingConfig,
)
from lib_speedkit.script_args import ARG_NAMES, DEFAULT_ARGS, MODE_INDEX, args_from_plan, plan_from_args
from strategies import valid_plans


def test_argument_order_is_the_documented_api_order():
    assert ARG_NAMES == (
        "enabled",
        "attention",
        "cutoff_mode",
        "cutoff_value",
        "tome_ratio",
        "tome_hr_ratio",
        "tome_max_downsample",
        "tome_sx",
        "tome_sy",
        "tome_random",
        "tome_seed",
        "channels_last",
        "cuda_graph",
        "lean_step",
        "mode",
        "deepcache_interval",
        "deepcache_branch",
        "deepcache_hr_interval",
        "deepcache_start",
        "deepcache_end",
        "compile_unet",
    )


def test_clients_sending_the_fifteen_args_of_the_previous_version_get_deepcache_off():
    plan = plan_from_args([True, "sdp", "off", 0.75, 0, 0, 1, 2, 2, False, -1, False, True, True, "Custom"])
    assert plan.cuda_graph.enabled and not plan.deepcache.enabled


def test_the_compiled_unet_rides_on_the_cuda_graph_and_says_so_when_asked_alone():
    plan = plan_from_args(DEFAULT_ARGS, {"cuda_graph": True, "compile_unet": True})
    assert plan.compile.enabled and plan.cuda_graph.enabled
    assert args_from_plan(plan)[ARG_NAMES.index("compile_unet")] is True
    assert plan_from_args(args_from_plan(plan)) == plan
    expected = r"compile_unet \(args\[20\]\): True is not allowed; expected only with cuda_graph on"
    with pytest.raises(PlanError, match=expected):
        plan_from_args(DEFAULT_ARGS, {"compile_unet": True})


def test_deepcache_args_become_its_config_and_bad_values_name_the_argument():
    plan = plan_from_args(DEFAULT_ARGS, {"deepcache_interval": "3", "deepcache_branch": 1, "deepcache_end": 2})
    assert plan.deepcache == DeepCacheConfig(interval=3, branch=1, end=2)
    expected = r"deepcache_interval \(args\[15\]\): 11 is not allowed; expected an integer from 1 to 10"
    with pytest.raises(PlanError, match=expected):
        plan_from_args(DEFAULT_ARGS, {"deepcache_interval": 11})
    with pytest.raises(PlanError, match=r"deepcache_branch \(args\[16\]\): -1"):
        plan_from_args(DEFAULT_ARGS, {"deepcache_interval": 2, "deepcache_branch": -1})


def test_older_clients_sending_twelve_args_get_the_new_switches_off():
    plan = plan_from_args([True, "sdp", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, True])
    assert plan.channels_last.enabled and not plan.cuda_graph.enabled and not plan.lean_step.enabled


def test_disabled_means_no_plan_and_enabled_defaults_mean_the_noop_plan():
    assert plan_from_args(DEFAULT_ARGS) is None
    assert plan_from_args([True]).is_noop


def test_a_short_list_keeps_the_defaults_for_the_rest():
    plan = plan_from_args([True, "sdp - scaled dot product", "fraction", 0.5])
    assert plan == SpeedPlan(AttentionConfig("sdp"), GuidanceCutoffConfig("fraction", 0.5))


@pytest.mark.parametrize(
    ("args", "label"),
    [
        ([True, "sdp", "off", 0.75, 0.9], "tome_ratio (args[4])"),
        ([True, "quantum"], "attention (args[1])"),
        ([True, "keep", "fraction", 1.5], "cutoff_value (args[3])"),
        ([True, "keep", "fraction", "lots"], "cutoff_value (args[3])"),
        (["yes"], "enabled (args[0])"),
        ([True, "keep", "off", 0.75, 0.5, 0.0, 3], "tome_max_downsample (args[6])"),
        ([True, "keep", "off", 0.75, 0.5, 0.0, 1, 2, 2, False, 1.5], "tome_seed (args[10])"),
        ([True] + [None] * 11, "attention (args[1])"),
    ],
)
def test_bad_values_name_the_argument_and_its_position(args, label):
    with pytest.raises(PlanError) as caught:
        plan_from_args(args)
    assert caught.value.field == label
    assert label in str(caught.value)


def test_a_tome_seed_beyond_what_torch_takes_is_refused_before_anything_runs():
    args = [True, "keep", "off", 0.75, 0.5, 0.0, 1, 2, 2, True]
    assert plan_from_args([*args, 2**64 - 1]).tome.seed == 2**64 - 1
    with pytest.raises(PlanError) as caught:
        plan_from_args([*args, 2**64])
    assert caught.value.field == "tome_seed (args[10])"


def test_the_largest_tome_seed_really_seeds_torch():
    import torch

    torch.Generator().manual_seed(2**64 - 1)


def test_too_many_values_are_refused():
    with pytest.raises(PlanError, match="at most 21 values"):
        plan_from_args([*DEFAULT_ARGS, 1])


def test_values_from_json_and_dropdowns_are_converted():
    plan = plan_from_args(["true", "sdp", "sigma", "1.5", "0.5", 0, "2", 2.0, 2, "false", -1.0, True])
    assert plan.tome == TokenMergingConfig(ratio=0.5, max_downsample=2)
    assert plan.cutoff == GuidanceCutoffConfig("sigma", 1.5)
    assert plan.channels_last.enabled


def test_xyz_overrides_enable_speedkit_even_with_the_accordion_closed():
    plan = plan_from_args(DEFAULT_ARGS, {"tome_ratio": "0.4"})
    assert plan == SpeedPlan(tome=TokenMergingConfig(ratio=0.4))
    with pytest.raises(PlanError, match="teleport"):
        plan_from_args(DEFAULT_ARGS, {"teleport": 1})


def test_seed_minus_one_means_the_image_seed_for_random_merging():
    args = [True, "keep", "off", 0.75, 0.5, 0.0, 1, 2, 2, True, -1]
    assert plan_from_args(args, image_seed=1234).tome.seed == 1234
    assert plan_from_args(args).tome.seed is None


@given(valid_plans)
def test_args_from_plan_reproduce_the_plan(plan):
    args = args_from_plan(plan)
    assert len(args) == len(ARG_NAMES)
    rebuilt = plan_from_args(args)
    assert (rebuilt or SpeedPlan()) == plan


def mode_args(mode: str, *knobs) -> list:
    """The full positional list: enabled, then `knobs` over the defaults, and the mode at its place."""
    args = [True, *DEFAULT_ARGS[1:]]
    args[: len(knobs)] = knobs
    args[MODE_INDEX] = mode
    return args


def test_a_named_mode_sets_the_switches_and_the_knobs_sent_along_do_not_count():
    knobs = [True, "sdp-math", "off", 0.75, 0.3, 0.0, 1, 2, 2, False, -1, False, False, False]
    plan = plan_from_args(mode_args("lossless", *knobs))
    assert plan == SpeedPlan(
        AttentionConfig("sdp"),
        channels_last=ChannelsLastConfig(True),
        cuda_graph=CudaGraphConfig(True),
        lean_step=LeanStepConfig(True),
        mode="Lossless",
    )
    fastest = plan_from_args(mode_args("Fastest", *knobs))
    assert fastest.cutoff == GuidanceCutoffConfig("fraction", 0.5) and fastest.tome.ratio == 0.5


def test_off_is_no_plan_and_custom_takes_the_knobs():
    assert plan_from_args(mode_args("Off", True)) is None
    custom = plan_from_args(mode_args("Custom", True, "sdp-math", "off", 0.75, 0.3))
    assert custom == SpeedPlan(AttentionConfig("sdp-math"), tome=TokenMergingConfig(ratio=0.3))


def test_a_mode_leaves_out_what_cannot_run_in_this_webui():
    unavailable = {"sdp": "no", "xformers": "no", "cuda_graph": "needs torch >= 2.4", "cutoff_mode": "Forge"}
    plan = plan_from_args(mode_args("Fast", True), unavailable=unavailable)
    assert plan.attention.backend == "keep" and not plan.cuda_graph.enabled and not plan.cutoff.enabled
    assert plan.channels_last.enabled and plan.lean_step.enabled


def test_an_xyz_override_of_a_setting_means_custom_and_of_the_mode_a_mode():
    args = mode_args("Lossless", True)
    assert plan_from_args(args, {"tome_ratio": "0.4"}).mode == "Custom"
    assert plan_from_args(DEFAULT_ARGS, {"mode": "Fast"}).mode == "Fast"
    with pytest.raises(PlanError) as caught:
        plan_from_args(mode_args("Turbo", True))
    assert caught.value.field == "mode (args[14])"
