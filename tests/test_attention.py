"""Attention backends compute ldm's original attention, and their patches undo exactly."""

import copy

import pytest
import torch

from lib_speedkit.attention import (
    BACKENDS,
    active_backend,
    apply_attention,
    attention_modules,
    get_backend,
)
from lib_speedkit.errors import BackendUnavailable
from lib_speedkit.plan import LIBRARY_BACKENDS
from lib_speedkit.snapshot import ModuleSnapshot
from tiny_models import CONTEXT_DIM, CONTEXT_TOKENS, unet_output

TOLERANCE = 1e-5  # max abs error vs ldm's original forward, fp32 on CPU
CPU_BACKENDS = [name for name, backend in BACKENDS.items() if backend.is_available("cpu", torch.float32, 64)]
CPU_UNAVAILABLE = [name for name in BACKENDS if name not in CPU_BACKENDS]


def _ldm_attention(query_dim=64, context_dim=None, heads=4, dim_head=16):
    from ldm.modules.attention import CrossAttention

    torch.manual_seed(3)
    module = CrossAttention(query_dim, context_dim=context_dim, heads=heads, dim_head=dim_head)
    for param in module.parameters():
        torch.nn.init.normal_(param, std=0.3)
    return module.eval()


def test_registry_is_what_the_plan_allows():
    assert tuple(BACKENDS) == LIBRARY_BACKENDS


def test_v1_sdp_flash_and_math_run_on_cpu():
    assert {"v1", "sdp", "sdp-flash", "sdp-math"} <= set(CPU_BACKENDS)


@pytest.mark.parametrize("name", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["cross", "self"])
def test_backend_equals_ldm_original_forward(name, kind):
    module = _ldm_attention(context_dim=CONTEXT_DIM if kind == "cross" else None)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 256, 64, generator=generator)
    context = torch.randn(2, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator) if kind == "cross" else None
    with torch.no_grad():
        expected = module(x, context=context)
        actual = BACKENDS[name].forward(module, x, context=context)
    error = (actual - expected).abs().max().item()
    assert error <= TOLERANCE, f"{name} {kind}-attention max abs error {error:.2e}"


@pytest.mark.parametrize("name", ["v1", "sdp", "sdp-math"])
def test_backend_honours_ldm_key_mask(name):
    module = _ldm_attention(context_dim=CONTEXT_DIM)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 32, 64, generator=generator)
    context = torch.randn(2, CONTEXT_TOKENS, CONTEXT_DIM, generator=generator)
    mask = torch.rand(2, CONTEXT_TOKENS, generator=generator) > 0.3
    with torch.no_grad():
        expected = module(x, context=context, mask=mask)
        actual = BACKENDS[name].forward(module, x, context=context, mask=mask)
    assert (actual - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("name", CPU_UNAVAILABLE)
def test_unavailable_backend_says_why(name):
    availability = BACKENDS[name].is_available("cpu", torch.float32, 64)
    assert not availability
    assert availability.reason
    if name.startswith("sdp-"):
        assert "CUDA" in availability.reason


@pytest.mark.parametrize("name", [n for n in CPU_UNAVAILABLE if n.startswith("sdp-")])
def test_restricted_kernel_never_falls_back_silently(name):
    module = _ldm_attention()
    with pytest.raises(BackendUnavailable) as caught:
        BACKENDS[name].forward(module, torch.randn(1, 8, 64))
    assert caught.value.backend == name


@pytest.mark.parametrize("name", CPU_UNAVAILABLE)
def test_applying_an_unavailable_backend_refuses_and_patches_nothing(unet, assert_clean, name):
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(BackendUnavailable):
        apply_attention(unet, name)
    assert_clean(unet, before)


def test_kernel_refusal_names_device_dtype_and_head_size():
    availability = BACKENDS["sdp-efficient"].is_available("cpu", torch.bfloat16, 40)
    assert not availability
    assert "bfloat16" in availability.reason and "cpu" in availability.reason and "40" in availability.reason


def test_host_only_backends_are_not_reimplemented():
    for name in ("doggettx", "sub-quadratic", "invokeai", "sdp-no-mem"):
        with pytest.raises(BackendUnavailable, match="WebUI host"):
            get_backend(name)


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_apply_on_unet_matches_then_undo_restores_bit_identically(unet, assert_clean, name):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    undo = apply_attention(unet, name)
    assert active_backend(unet) == name
    assert len(list(attention_modules(unet))) == 14
    assert (unet_output(unet) - reference).abs().max().item() <= 1e-4
    undo()
    assert_clean(unet, before)
    assert active_backend(unet) is None
    assert torch.equal(unet_output(unet), reference)


def test_keep_changes_nothing(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    with apply_attention(unet, "keep"):
        assert_clean(unet, before)


def test_applying_twice_replaces_and_one_undo_restores(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    first = apply_attention(unet, "sdp")
    second = apply_attention(unet, "v1")
    assert active_backend(unet) == "v1"
    first()  # superseded: already undone by the second apply, must not touch the second
    assert active_backend(unet) == "v1"
    second()
    second()
    assert_clean(unet, before)


def test_an_existing_instance_forward_is_restored_exactly(unet):
    _, module = next(attention_modules(unet))
    wrapper = module.forward  # another extension's instance-level wrapper (bound method object)
    module.forward = wrapper
    with apply_attention(unet, "sdp"):
        assert module.__dict__["forward"] is not wrapper
    assert module.__dict__["forward"] is wrapper


def test_undo_works_as_a_context_manager_after_an_exception(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    with pytest.raises(RuntimeError, match="boom"):
        with apply_attention(unet, "sdp-math"):
            raise RuntimeError("boom")
    assert_clean(unet, before)


def test_module_forward_can_be_installed_at_class_level():
    module = _ldm_attention()
    x = torch.randn(1, 8, 64)
    expected = module(x)
    patched = copy.deepcopy(module)
    patched.forward = get_backend("sdp-math").module_forward().__get__(patched)
    assert (patched(x) - expected).abs().max() <= TOLERANCE


def test_context_transform_feeds_keys_and_values_like_webui_hypernetworks():
    module = _ldm_attention(context_dim=CONTEXT_DIM)
    x = torch.randn(1, 8, 64)
    context = torch.randn(1, CONTEXT_TOKENS, CONTEXT_DIM)
    doubled = (context * 2, context * 2)
    with torch.no_grad():
        expected = module(x, context=context * 2)
        actual = BACKENDS["sdp"].forward(module, x, context=context, context_transform=lambda c: doubled)
    assert (actual - expected).abs().max() <= TOLERANCE


def test_upcast_computes_attention_in_fp32_and_returns_the_input_dtype(monkeypatch):
    backend = get_backend("sdp-math")
    seen = []
    original = backend._attend
    monkeypatch.setattr(
        backend, "_attend", lambda q, k, v, mask, scale: seen.append(q.dtype) or original(q, k, v, mask, scale)
    )
    module = _ldm_attention().to(torch.bfloat16)
    x = torch.randn(1, 8, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        upcast = backend.module_forward(upcast=lambda: True)(module, x)
        plain = backend.module_forward(upcast=lambda: False)(module, x)
    assert seen == [torch.float32, torch.bfloat16]
    assert upcast.dtype == plain.dtype == torch.bfloat16


def test_v1_computes_scores_and_softmax_in_fp32_under_autocast(monkeypatch):
    """Under bf16 autocast a plain einsum would produce bf16 scores (they overflow in fp16 on
    SD2-class models); v1 keeps them fp32 as its docstring says."""
    seen = []
    real_softmax = torch.Tensor.softmax

    def recording_softmax(self, *args, **kwargs):
        seen.append(self.dtype)
        return real_softmax(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "softmax", recording_softmax)
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.bfloat16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BACKENDS["v1"]._attend(q, k, v, None, 8**-0.5)
    assert seen == [torch.float32]
    expected = torch.softmax(q.float() @ k.float().transpose(-1, -2) * 8**-0.5, dim=-1).to(v.dtype) @ v
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), expected.float(), atol=1e-2)


def test_out_of_memory_in_a_restricted_kernel_stays_an_out_of_memory_error(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", out_of_memory)
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(torch.OutOfMemoryError):
        BACKENDS["sdp-math"]._attend(q, q, q, None, 8**-0.5)


def test_an_error_the_probe_does_not_confirm_is_not_reported_as_an_unavailable_kernel(monkeypatch):
    assert BACKENDS["sdp-math"].is_available("cpu", torch.float32, 8)  # probed with the real kernel

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch somewhere")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", broken)
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(RuntimeError, match="shape mismatch") as raised:
        BACKENDS["sdp-math"]._attend(q, q, q, None, 8**-0.5)
    assert not isinstance(raised.value, BackendUnavailable)
