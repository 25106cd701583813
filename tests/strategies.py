"""Hypothesis strategies shared by the tests."""

from hypothesis import strategies as st

from lib_speedkit.plan import (
    ATTENTION_CHOICES,
    AttentionConfig,
    ChannelsLastConfig,
    CudaGraphConfig,
    DeepCacheConfig,
    GuidanceCutoffConfig,
    LeanStepConfig,
    SpeedPlan,
    TokenMergingConfig,
)

valid_plans = st.builds(
    SpeedPlan,
    attention=st.builds(AttentionConfig, st.sampled_from(ATTENTION_CHOICES)),
    cutoff=st.one_of(
        st.just(GuidanceCutoffConfig()),
        st.builds(GuidanceCutoffConfig, st.just("sigma"), st.floats(1e-4, 1e3)),
        st.builds(GuidanceCutoffConfig, st.sampled_from(["fraction", "adaptive"]), st.floats(0, 1)),
    ),
    tome=st.builds(
        TokenMergingConfig,
        ratio=st.floats(0, 0.75),
        hr_ratio=st.floats(0, 0.75),
        max_downsample=st.sampled_from([1, 2, 4, 8]),
        sx=st.integers(2, 8),
        sy=st.integers(2, 8),
        use_rand=st.booleans(),
        seed=st.none() | st.integers(0, 2**63 - 1),
    ),
    channels_last=st.builds(ChannelsLastConfig, st.booleans()),
    cuda_graph=st.builds(CudaGraphConfig, st.booleans()),
    lean_step=st.builds(LeanStepConfig, st.booleans()),
    deepcache=st.builds(
        DeepCacheConfig,
        interval=st.integers(1, 10),
        branch=st.integers(0, 11),
        start=st.integers(0, 1000),
        end=st.integers(0, 1000),
        hr_interval=st.integers(0, 10),
    ),
)
"""Plans as the knobs make them (mode Custom); named modes: tests/test_modes.py."""
