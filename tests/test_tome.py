"""Token merging: ratio 0 is the identity, merging really happens where configured, undo is exact."""

import pytest
import torch

from lib_speedkit.errors import PatchConflict
from lib_speedkit.plan import TokenMergingConfig
from lib_speedkit.snapshot import ModuleSnapshot
from lib_speedkit.tome import apply_tome, has_tome_patch
from tiny_models import LATENT_SIZE, unet_output


def _self_attention_token_counts(unet):
    """Tokens reaching each self-attention, keyed by module name, filled on the next forward."""
    counts = {}
    for name, module in unet.named_modules():
        if name.endswith("attn1"):
            module.register_forward_pre_hook(lambda m, args, name=name: counts.__setitem__(name, args[0].shape[1]))
    return counts


def test_ratio_zero_is_the_identity_and_patches_nothing(unet, assert_clean):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    with apply_tome(unet, TokenMergingConfig(ratio=0.0)):
        assert_clean(unet, before)
        assert torch.equal(unet_output(unet), reference)


def test_merging_changes_output_and_undo_restores_everything(unet, assert_clean):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    undo = apply_tome(unet, TokenMergingConfig(ratio=0.5))
    assert has_tome_patch(unet)
    merged = unet_output(unet)
    assert torch.isfinite(merged).all()
    assert (merged - reference).abs().max() > 1e-4
    undo()
    assert_clean(unet, before)  # classes, forward hooks, tomesd's leftover attributes
    assert torch.equal(unet_output(unet), reference)


@pytest.mark.parametrize(("max_downsample", "merged_at_8x8"), [(1, False), (2, True)])
def test_max_downsample_limits_merging_to_the_configured_levels(unet, max_downsample, merged_at_8x8):
    counts = _self_attention_token_counts(unet)
    unet_output(unet)
    unmerged = dict(counts)
    with apply_tome(unet, TokenMergingConfig(ratio=0.5, max_downsample=max_downsample)):
        unet_output(unet)
    full = LATENT_SIZE * LATENT_SIZE
    assert set(unmerged.values()) == {full, full // 4}  # attention at 16x16 and at 8x8
    for name, tokens in unmerged.items():
        halved = tokens == full or merged_at_8x8
        assert counts[name] == (tokens // 2 if halved else tokens), name


def test_stride_changes_which_tokens_merge(unet):
    outputs = []
    for sx in (2, 4):
        with apply_tome(unet, TokenMergingConfig(ratio=0.5, sx=sx, sy=2)):
            outputs.append(unet_output(unet))
    assert not torch.equal(*outputs)


def test_random_merging_is_reproducible_with_a_seed(unet):
    def run(seed):
        torch.manual_seed(999)  # the global RNG must not matter when a seed is given
        with apply_tome(unet, TokenMergingConfig(ratio=0.5, use_rand=True, seed=seed)):
            return unet_output(unet, batch=2)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_a_foreign_tome_patch_is_refused_and_left_alone(unet, assert_clean):
    import tomesd

    from lib_speedkit.tome import _LatentDiffusionShim

    tomesd.apply_patch(_LatentDiffusionShim(unet), ratio=0.3)
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(PatchConflict):
        apply_tome(unet, TokenMergingConfig(ratio=0.5))
    assert_clean(unet, before)


def test_applying_twice_then_undoing_once_leaves_the_unet_clean(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    apply_tome(unet, TokenMergingConfig(ratio=0.3))
    undo = apply_tome(unet, TokenMergingConfig(ratio=0.5, max_downsample=2))
    undo()
    assert_clean(unet, before)


def test_composes_with_an_attention_backend(unet, assert_clean):
    from lib_speedkit.attention import apply_attention

    before = ModuleSnapshot.capture(unet)
    with apply_tome(unet, TokenMergingConfig(ratio=0.5)):
        merged = unet_output(unet)
        with apply_attention(unet, "sdp-math"):
            assert (unet_output(unet) - merged).abs().max() <= 1e-4
    assert_clean(unet, before)
