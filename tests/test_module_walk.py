"""One walk per hook: inside `walk_once` a model's module list is walked once and reused; outside,
every call walks afresh. Only the list is kept: what the modules hold is read anew."""

import threading

import torch

from lib_speedkit import module_walk
from lib_speedkit.cuda_graph import module_fingerprint
from lib_speedkit.memory_format import _four_d_tensors


def _model() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3), torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_outside_a_block_every_walk_sees_the_tree_as_it_is_now():
    model = _model()
    assert len(module_walk.modules(model)) == 4
    model.append(torch.nn.ReLU())
    assert len(module_walk.modules(model)) == 5


def test_inside_a_block_the_first_walk_is_reused_until_the_block_ends():
    model = _model()
    with module_walk.walk_once():
        first = module_walk.named_modules(model)
        model.append(torch.nn.ReLU())  # a block must not do this: the kept walk does not see it
        assert module_walk.named_modules(model) is first
        assert [name for name, _ in first] == ["", "0", "1", "1.0"]
    assert len(module_walk.modules(model)) == 5


def test_each_model_has_its_own_walk_and_nested_blocks_share_the_outer_one():
    one, two = _model(), torch.nn.Linear(2, 2)
    with module_walk.walk_once():
        kept = module_walk.named_modules(one)
        with module_walk.walk_once():
            assert module_walk.named_modules(one) is kept
            assert module_walk.modules(two) == [two]
        assert module_walk.named_modules(one) is kept  # the inner block did not end the outer one's


def test_what_the_modules_hold_is_read_anew_inside_a_block():
    model = _model()
    with module_walk.walk_once():
        before = module_fingerprint(model)
        model[0].weight.data = model[0].weight.data.clone()  # new storage
        assert module_fingerprint(model) != before
        model[0].forward = lambda x: x  # an extension replaces a forward
        assert module_fingerprint(model) != before


def test_another_thread_does_not_see_the_blocks_walk():
    model = _model()
    seen = []
    with module_walk.walk_once():
        module_walk.modules(model)
        model.append(torch.nn.ReLU())
        thread = threading.Thread(target=lambda: seen.append(len(module_walk.modules(model))))
        thread.start()
        thread.join()
    assert seen == [5]


def test_a_weight_shared_by_two_layers_is_one_four_d_tensor():
    first, second = torch.nn.Conv2d(4, 4, 3), torch.nn.Conv2d(4, 4, 3)
    second.weight = first.weight
    model = torch.nn.Sequential(first, second)
    model.register_buffer("mask", torch.ones(1, 1, 2, 2))
    tensors = _four_d_tensors(model)
    assert sorted(map(id, tensors)) == sorted([id(first.weight), id(model.mask)])
