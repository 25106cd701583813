"""Channels-last: weights and inputs converted, values unchanged, exact previous layout restored."""

import torch

from lib_speedkit.memory_format import apply_channels_last, is_channels_last
from lib_speedkit.snapshot import ModuleSnapshot
from tiny_models import unet_output


def _first_conv_input_layouts(unet):
    seen = []
    unet.input_blocks[0].register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    return seen


def test_weights_and_inputs_go_channels_last_with_the_same_values(unet):
    seen = _first_conv_input_layouts(unet)
    reference = unet_output(unet)
    assert not is_channels_last(unet)
    with apply_channels_last(unet):
        assert is_channels_last(unet)
        out = unet_output(unet)
    assert seen == [False, True]  # reference call: NCHW; patched call: converted input
    assert (out - reference).abs().max().item() <= 1e-5


def test_undo_restores_contiguous_layout_exactly(unet, assert_clean):
    reference = unet_output(unet)
    before = ModuleSnapshot.capture(unet)
    undo = apply_channels_last(unet)
    undo()
    assert_clean(unet, before)  # strides of every tensor, hooks removed
    assert torch.equal(unet_output(unet), reference)


def test_an_already_channels_last_unet_stays_channels_last(unet, assert_clean):
    unet.to(memory_format=torch.channels_last)  # like the WebUI's --opt-channelslast
    before = ModuleSnapshot.capture(unet)
    with apply_channels_last(unet):
        assert is_channels_last(unet)
    assert_clean(unet, before)
    assert is_channels_last(unet)


def test_a_mixed_layout_is_restored_tensor_by_tensor(unet, assert_clean):
    conv = unet.input_blocks[0][0]
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    before = ModuleSnapshot.capture(unet)
    with apply_channels_last(unet):
        pass
    assert_clean(unet, before)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not is_channels_last(unet)


def test_disabled_changes_nothing(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    with apply_channels_last(unet, enabled=False):
        assert_clean(unet, before)


def test_applying_twice_then_undoing_once_leaves_the_unet_clean(unet, assert_clean):
    before = ModuleSnapshot.capture(unet)
    apply_channels_last(unet)
    apply_channels_last(unet)()
    assert_clean(unet, before)
    assert len(unet._forward_pre_hooks) == 0


def test_channels_last_keeps_every_weight_s_storage_so_cuda_graphs_stay_valid(unet):
    addresses = [p.data_ptr() for p in unet.parameters()]
    for _ in range(2):
        with apply_channels_last(unet, True):
            assert [p.data_ptr() for p in unet.parameters()] == addresses
        assert [p.data_ptr() for p in unet.parameters()] == addresses


def test_relayout_in_chunks_keeps_every_value_address_and_negative_zero(monkeypatch):
    from lib_speedkit import memory_format

    allocations = []
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: allocations.append(args) or empty(*args, **kwargs))
    tensors = [torch.randn(4, 3, 2, 2) for _ in range(5)]
    tensors[0][0, 0, 0, 0] = -0.0
    before = [(t.clone(), t.data_ptr()) for t in tensors]
    targets = [(t, memory_format._channels_last_stride(t.shape)) for t in tensors]
    chunks = memory_format._chunks(targets, limit=2 * tensors[0].numel() * 4)
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    original_limit = memory_format.RELAYOUT_CHUNK_BYTES
    try:
        memory_format.RELAYOUT_CHUNK_BYTES = 2 * tensors[0].numel() * 4
        memory_format._relayout_all(targets)
    finally:
        memory_format.RELAYOUT_CHUNK_BYTES = original_limit
    assert len(allocations) == 1  # one staging buffer serves the three chunks in turn
    for tensor, (values, address) in zip(tensors, before, strict=True):
        assert tensor.is_contiguous(memory_format=torch.channels_last) and tensor.data_ptr() == address
        assert torch.equal(tensor, values)
    assert torch.signbit(tensors[0][0, 0, 0, 0])  # -0.0 stays -0.0 (bit-exact copies, not x + 0)


def test_relayout_stages_each_chunk_in_one_buffer_of_mixed_dtypes():
    from lib_speedkit import memory_format

    tensors = [torch.randn(4, 3, 2, 2), torch.randn(2, 5, 3, 3).half(), torch.randn(1, 1, 1, 3).double()]
    staged = memory_format._staging_views(tensors)
    bases = {view.untyped_storage().data_ptr() for view in staged}
    assert len(bases) == 1  # one allocation for the chunk
    for view, tensor in zip(staged, tensors, strict=True):
        assert view.shape == tensor.shape and view.dtype == tensor.dtype and view.is_contiguous()
        assert view.storage_offset() * view.element_size() % memory_format.STAGING_ALIGN_BYTES == 0
    before = [t.clone() for t in tensors]
    memory_format._relayout_all([(t, memory_format._channels_last_stride(t.shape)) for t in tensors])
    for tensor, values in zip(tensors, before, strict=True):
        assert tensor.is_contiguous(memory_format=torch.channels_last) and torch.equal(tensor, values)
