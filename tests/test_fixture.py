"""The test fixture itself must be able to catch attention mistakes."""

import torch

from lib_speedkit.attention import attention_modules
from tiny_models import unet_output


def test_unet_output_is_not_trivially_zero(unet):
    out = unet_output(unet)
    assert out.abs().max() > 0.1
    assert torch.isfinite(out).all()


def test_no_parameter_is_left_zero_initialised(unet):
    zero = [name for name, p in unet.named_parameters() if p.abs().max() == 0]
    assert zero == []


def test_changing_attention_output_changes_unet_output(unet):
    """If this failed, every attention-equivalence test would pass vacuously."""
    reference = unet_output(unet)
    for _, module in attention_modules(unet):
        module.register_forward_hook(lambda _m, _args, out: out * 1.01)
    changed = unet_output(unet)
    assert (changed - reference).abs().max() > 1e-3


def test_self_and_cross_attention_both_matter(unet):
    reference = unet_output(unet)
    for kind in ("attn1", "attn2"):
        model = __import__("copy").deepcopy(unet)
        for name, module in attention_modules(model):
            if name.endswith(kind):
                module.register_forward_hook(lambda _m, _args, out: out * 1.01)
        assert (unet_output(model) - reference).abs().max() > 1e-3, kind
