"""Tier 2 (no server): SDXL's timestep embedding made capturable gives sgm's own values; DeepCache
splits an sgm UNet (SDXL's layout at toy width) exactly."""

from __future__ import annotations

import pytest
import torch

from lib_speedkit.webui.sgm_unet import frequencies, timestep_embedding


@pytest.fixture(scope="module")
def sgm_embedding():
    util = pytest.importorskip("sgm.modules.diffusionmodules.util", reason="sgm: the WebUI's generative-models")
    return util.timestep_embedding


@pytest.mark.parametrize("dim", [320, 256, 1281])
def test_the_embedding_equals_sgms_bit_for_bit(sgm_embedding, dim):
    timesteps = torch.tensor([999.0, 500.5, 0.0, 37.0])
    assert torch.equal(timestep_embedding(timesteps, dim), sgm_embedding(timesteps, dim))
    assert torch.equal(
        timestep_embedding(timesteps, dim, repeat_only=True), sgm_embedding(timesteps, dim, repeat_only=True)
    )


def test_the_frequencies_are_computed_once_per_size_and_device():
    first = frequencies(160, 10000, torch.device("cpu"))
    assert frequencies(160, 10000, torch.device("cpu")) is first


# --------------------------------------------------------------------------- DeepCache on an sgm UNet


@pytest.fixture(scope="module")
def tiny_sdxl_unet():
    """SDXL's UNet layout (label embedding of a pooled vector, linear transformers, no attention at
    the top level) at toy width, every parameter random (sgm zero-initialises some layers)."""
    openaimodel = pytest.importorskip("sgm.modules.diffusionmodules.openaimodel", reason="sgm: generative-models")
    from lib_speedkit.bench.models import rerandomise

    unet = openaimodel.UNetModel(
        adm_in_channels=48,
        num_classes="sequential",
        in_channels=4,
        out_channels=4,
        model_channels=32,
        attention_resolutions=[2],
        num_res_blocks=1,
        channel_mult=[1, 2, 2],
        num_head_channels=8,
        use_spatial_transformer=True,
        use_linear_in_transformer=True,
        transformer_depth=[1, 1, 2],
        context_dim=64,
        spatial_transformer_attn_type="softmax",
        legacy=False,
    )
    rerandomise(unet, 99)
    return unet.eval()


def sdxl_inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 77, 64, generator=generator)
    y = torch.randn(2, 48, generator=generator)
    return x, torch.tensor([900.0, 500.0]), context, y


@pytest.mark.parametrize("branch", [0, 3, 5])
def test_deepcache_on_an_sgm_unet_splits_it_exactly(tiny_sdxl_unet, branch):
    from lib_speedkit.deepcache import FullStep, ShallowStep, layout_reason

    unet = tiny_sdxl_unet
    assert len(unet.input_blocks) == 6 and layout_reason(unet, branch) is None
    x, timesteps, context, y = sdxl_inputs(1)
    with torch.no_grad():
        own = unet(x, timesteps=timesteps, context=context, y=y)
        full, deep = FullStep(unet, branch)(x, timesteps, context, y)
        shallow = ShallowStep(unet, branch)(x, timesteps, context, y, deep=deep)
    assert torch.equal(full, own) and torch.equal(shallow, own)


def test_deepcache_on_an_sgm_unet_runs_shallow_steps_and_restores_the_forward(tiny_sdxl_unet):
    from lib_speedkit.deepcache import apply_deepcache, deepcache_forward_of
    from lib_speedkit.plan import DeepCacheConfig

    unet = tiny_sdxl_unet
    undo = apply_deepcache(unet, DeepCacheConfig(interval=3))
    outputs = []
    with torch.no_grad():
        for step in range(6):
            x, timesteps, context, y = sdxl_inputs(10 + step)
            outputs.append(unet(x, timesteps=timesteps, context=context, y=y))
    counts = deepcache_forward_of(unet).counts
    undo()
    assert (counts.full, counts.shallow) == (2, 4) and "forward" not in unet.__dict__
    with torch.no_grad():
        for step, output in enumerate(outputs):
            x, timesteps, context, y = sdxl_inputs(10 + step)
            assert torch.equal(output, unet(x, timesteps=timesteps, context=context, y=y)) == (step % 3 == 0)
