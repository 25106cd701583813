"""A whole plan applies as one unit and leaves nothing behind on any path: with the library's
appliers, and with a host's (the path the WebUI takes, played by tests/fake_host.py)."""

import pytest
import torch
from fake_host import FakeHost
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cuda_graph import StandInCapturer

from lib_speedkit.appliers import host_appliers
from lib_speedkit.apply import FEATURES, GENERATION_FEATURES, apply_plan, library_appliers
from lib_speedkit.attention import BACKENDS, active_backend
from lib_speedkit.cuda_graph import GraphCache
from lib_speedkit.deepcache import deepcache_forward_of
from lib_speedkit.guidance import CutoffCFGDenoiser
from lib_speedkit.memory_format import is_channels_last
from lib_speedkit.plan import (
    AttentionConfig,
    ChannelsLastConfig,
    CompileConfig,
    CudaGraphConfig,
    DeepCacheConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
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


def failing_appliers(failing_step: str) -> dict:
    def fail(*_args):
        raise RuntimeError(f"{failing_step} failed")

    return {**library_appliers(), failing_step: fail}


@pytest.mark.parametrize("failing_step", GENERATION_FEATURES)
def test_a_failing_step_undoes_the_steps_before_it(unet, assert_clean, failing_step):
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(RuntimeError, match=f"{failing_step} failed"):
        apply_plan(unet, FULL_PLAN, appliers=failing_appliers(failing_step))
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


def test_the_library_says_why_it_left_a_feature_out(unet):
    plan = SpeedPlan(cuda_graph=CudaGraphConfig(True), lean_step=LeanStepConfig(True))
    with apply_plan(unet, plan) as applied:
        assert applied.applied == set()
        assert "CUDA device" in applied.skipped["cuda_graph"]
        assert "Lora built-in" in applied.skipped["lean_step"]


# --------------------------------------------------------------------------- the host path


@pytest.fixture
def host(unet):
    fake = FakeHost(unet, GraphCache(StandInCapturer(), max_graphs=4))
    fake.install_wrappers()
    yield fake
    fake.remove_wrappers()


HOST_PLAN = SpeedPlan(
    AttentionConfig("sdp-math"),
    GuidanceCutoffConfig("sigma", 2.0),
    TokenMergingConfig(ratio=0.5),
    ChannelsLastConfig(True),
    cuda_graph=CudaGraphConfig(True),
    lean_step=LeanStepConfig(True),
    deepcache=DeepCacheConfig(interval=2),
    compile=CompileConfig(True),
)


def host_state(host: FakeHost) -> tuple:
    return host.title, dict(host.class_forwards()), list(host.cutoff_threshold)


def test_the_host_path_applies_each_pass_and_restores_the_host_and_the_unet(unet, host, assert_clean):
    reference = unet_output(unet)
    before, host_before = ModuleSnapshot.capture(unet), host_state(host)
    with apply_plan(unet, HOST_PLAN, appliers=host_appliers(host.hooks()), features=GENERATION_FEATURES) as applied:
        assert host.title == "sdp-math (host)" and active_backend(unet) == "sdp-math"
        assert host.cutoff_threshold == [2.0] and is_channels_last(unet) and has_tome_patch(unet)
        for _pass in range(2):  # e.g. the first pass and the hires pass
            applied.begin_pass()
            assert applied.applied == set(FEATURES) and deepcache_forward_of(unet).graphed is not None
            host.wrapper_calls.clear()
            with torch.no_grad():
                unet_output(unet)
            assert host.wrapper_calls == []  # the lean step bypassed the wrappers
            assert len(host.compiled) == 1  # DeepCache's full step, compiled once for both passes
            applied.end_pass()
            assert "forward" not in unet.__dict__ and torch.nn.Linear.forward is host._wrappers[torch.nn.Linear]
    assert_clean(unet, before)
    assert host_state(host) == host_before
    assert torch.equal(unet_output(unet), reference)


def test_a_pass_with_networks_loaded_skips_the_pass_features_with_the_reason(unet, host):
    host.networks_loaded = True
    with apply_plan(unet, HOST_PLAN, appliers=host_appliers(host.hooks()), features=GENERATION_FEATURES) as applied:
        applied.begin_pass()
        assert not {"cuda_graph", "compile", "lean_step"} & applied.applied
        assert "deepcache" in applied.applied  # DeepCache does not read the networks
        assert applied.skipped == {
            "cuda_graph": "CUDA graph not used for this pass: networks loaded",
            "compile": "compiled UNet not used for this pass: the CUDA graph is not used (see its note)",
            "lean_step": "lean step off for this pass: networks loaded",
        }


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
    cuda_graph=st.builds(CudaGraphConfig, st.booleans()),
    lean_step=st.builds(LeanStepConfig, st.booleans()),
    deepcache=st.builds(DeepCacheConfig, st.sampled_from([1, 2, 3]), branch=st.integers(0, 3)),
)
failure_points = st.one_of(
    st.just(("none", None)),
    st.tuples(st.just("apply"), st.sampled_from(FEATURES)),
    st.tuples(st.just("sampling"), st.integers(0, STEPS - 1)),
)


def _failing_applier(*_args):
    raise RuntimeError("injected failure while applying")


def _run_generation(unet, host, plan, where, point, passes):
    """One generation as the WebUI runs it: generation features, then per pass begin, sample, end."""
    appliers = host_appliers(host.hooks())
    if where == "apply":
        appliers = {**appliers, point: _failing_applier}
    with apply_plan(unet, plan, appliers=appliers, features=GENERATION_FEATURES) as applied:
        for _ in range(passes):
            applied.begin_pass()
            with torch.no_grad():
                _sample(unet, applied.policy, fail_at_call=point if where == "sampling" else None)
            applied.end_pass()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans, failure=failure_points, passes=st.integers(1, 2), networks=st.booleans())
def test_no_plan_pass_count_or_failure_point_leaks_on_the_host_path(unet, host, plan, failure, passes, networks):
    """The property the WebUI relies on: whatever the plan, the number of sampling passes and
    where it fails (an applier, a UNet call mid-sampling), the UNet and the host are exactly as
    before, and the UNet computes bit-identically."""
    reference = unet_output(unet)
    before, host_before = ModuleSnapshot.capture(unet), host_state(host)
    host.networks_loaded = networks
    where, point = failure
    try:
        _run_generation(unet, host, plan, where, point, passes)
    except (RuntimeError, SamplingFailure):
        assert where != "none"
    else:
        # no error only where no failure was injected, or where the failing feature is off
        assert where == "none" or (where == "apply" and not getattr(plan, point).enabled), (where, point)
    problems = before.diff(ModuleSnapshot.capture(unet))
    assert problems == [], problems
    assert host_state(host) == host_before
    assert torch.equal(unet_output(unet), reference)
