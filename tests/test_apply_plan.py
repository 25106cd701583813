"""A whole plan applies as one unit and leaves nothing behind on any path."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib_speedkit import apply as apply_module
from lib_speedkit.apply import apply_plan
from lib_speedkit.attention import BACKENDS, active_backend
from lib_speedkit.guidance import CutoffCFGDenoiser
from lib_speedkit.memory_format import is_channels_last
from lib_speedkit.plan import (
    AttentionConfig,
    ChannelsLastConfig,
    GuidanceCutoffConfig,
    SpeedPlan,
    TokenMergingConfig,
)
from lib_speedkit.sampling import EpsDenoiser, discrete_sigmas, sample_euler
from lib_speedkit.snapshot import ModuleSnapshot
from lib_speedkit.tome import has_tome_patch
from tiny_models import LATENT_SIZE, prompt_pair, unet_output

FULL_PLAN = SpeedPlan(
    AttentionConfig("sdp"),
    GuidanceCutoffConfig("fraction", 0.5),
    TokenMergingConfig(ratio=0.4, max_downsample=2),
    ChannelsLastConfig(True),
)
STEPS = 8


class SamplingFailure(RuntimeError):
    pass


def _sample(unet, policy, fail_at_call=None):
    calls = []

    def maybe_fail(_module, _args):
        calls.append(1)
        if fail_at_call is not None and len(calls) > fail_at_call:
            raise SamplingFailure(f"injected failure at UNet call {fail_at_call}")

    hook = unet.register_forward_pre_hook(maybe_fail)
    try:
        denoiser = CutoffCFGDenoiser(EpsDenoiser(unet), policy)
        denoiser.begin(STEPS)
        cond, uncond = prompt_pair(1)
        sigmas = discrete_sigmas(STEPS)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(1, 4, LATENT_SIZE, LATENT_SIZE, generator=generator) * sigmas[0]
        return sample_euler(denoiser, x, sigmas, {"cond": cond, "uncond": uncond, "cond_scale": 12.0})
    finally:
        hook.remove()


def test_a_full_plan_applies_every_switch_and_undo_restores_bit_identically(unet, assert_clean):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    applied = apply_plan(unet, FULL_PLAN)
    assert active_backend(unet) == "sdp"
    assert has_tome_patch(unet)
    assert is_channels_last(unet)
    assert applied.policy.first_skipped_step(28) == 14
    assert torch.isfinite(_sample(unet, applied.policy)).all()
    applied()
    assert_clean(unet, before)
    assert torch.equal(unet_output(unet), reference)


def test_a_noop_plan_changes_nothing(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    with apply_plan(unet, SpeedPlan()) as applied:
        assert_clean(unet, before)
        assert applied.policy.run_uncond(27, 28, 0.03)


def test_an_exception_during_sampling_leaves_nothing_patched(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(SamplingFailure):
        with apply_plan(unet, FULL_PLAN) as applied:
            _sample(unet, applied.policy, fail_at_call=5)
    assert_clean(unet, before)


@pytest.mark.parametrize("failing_step", list(apply_module.APPLIERS))
def test_a_failing_step_undoes_the_steps_before_it(unet, assert_clean, monkeypatch, failing_step):
    def fail(*_args):
        raise RuntimeError(f"{failing_step} failed")

    monkeypatch.setitem(apply_module.APPLIERS, failing_step, fail)
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(RuntimeError, match=f"{failing_step} failed"):
        apply_plan(unet, FULL_PLAN)
    assert_clean(unet, before)


def test_an_unavailable_backend_fails_the_plan_with_nothing_half_applied(unet, assert_clean):
    from lib_speedkit.errors import BackendUnavailable

    plan = SpeedPlan(AttentionConfig("sdp-cudnn"), channels_last=ChannelsLastConfig(True))
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(BackendUnavailable):
        apply_plan(unet, plan)
    assert_clean(unet, before)


def test_applying_twice_then_undoing_once_leaves_the_unet_clean(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    first = apply_plan(unet, FULL_PLAN)
    second = apply_plan(unet, SpeedPlan(channels_last=ChannelsLastConfig(True)))
    assert not has_tome_patch(unet)  # the first plan's ToMe does not linger under the second
    first()  # superseded: a no-op
    assert is_channels_last(unet)
    second()
    assert_clean(unet, before)


CPU_BACKENDS = ["keep"] + [name for name, b in BACKENDS.items() if b.is_available("cpu", torch.float32, 8)]
plans = st.builds(
    SpeedPlan,
    attention=st.builds(AttentionConfig, st.sampled_from(CPU_BACKENDS)),
    cutoff=st.one_of(
        st.just(GuidanceCutoffConfig()),
        st.builds(GuidanceCutoffConfig, st.just("sigma"), st.floats(0.01, 20)),
        st.builds(GuidanceCutoffConfig, st.sampled_from(["fraction", "adaptive"]), st.floats(0, 1)),
    ),
    tome=st.builds(
        TokenMergingConfig,
        ratio=st.sampled_from([0.0, 0.3, 0.5, 0.75]),
        max_downsample=st.sampled_from([1, 2, 4, 8]),
        use_rand=st.booleans(),
        seed=st.none() | st.integers(0, 1000),
    ),
    channels_last=st.builds(ChannelsLastConfig, st.booleans()),
)
failure_points = st.one_of(
    st.just(("none", None)),
    st.tuples(st.just("apply"), st.sampled_from(list(apply_module.APPLIERS))),
    st.tuples(st.just("sampling"), st.integers(0, STEPS - 1)),
)


def _failing_applier(*_args):
    raise RuntimeError("injected failure while applying")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, failure=failure_points)
def test_no_plan_and_no_failure_point_leaks(unet, monkeypatch, plan, failure):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    where, point = failure
    with monkeypatch.context() as patch:
        if where == "apply":
            patch.setitem(apply_module.APPLIERS, point, _failing_applier)
        try:
            with apply_plan(unet, plan) as applied:
                _sample(unet, applied.policy, fail_at_call=point if where == "sampling" else None)
        except (RuntimeError, SamplingFailure):
            assert where != "none"
    problems = before.diff(ModuleSnapshot.capture(unet))
    assert problems == [], problems
    assert torch.equal(unet_output(unet), reference)
