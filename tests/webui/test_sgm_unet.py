"""Tier 2 (no server): SDXL's timestep embedding made capturable gives sgm's own values."""

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
