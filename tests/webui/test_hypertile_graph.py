"""Tier 2 (no server): the WebUI's own Hypertile code on a tiny ldm UNet, as the fast path sees it.

Hypertile wraps attention forwards on the instance once and then only flips Python settings: a
graph key that missed them would replay a stale tiling (tests/test_cuda_graph.py shows such a
stale replay with the freezing stand-in capturer).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from harness import a1111_dir
from test_cuda_graph import StandInCapturer, call

from lib_speedkit.apply import replaced_forwards_reason
from lib_speedkit.cuda_graph import GraphCache, apply_cuda_graph, instance_forwards
from lib_speedkit.webui.hypertile import hypertile_blocker, hypertile_key, is_hypertile_forward
from tiny_models import tiny_unet


@pytest.fixture(scope="module")
def hypertile():
    if a1111_dir() is None:
        pytest.skip("tier 2 skipped: set SPEEDKIT_A1111_DIR")
    path = a1111_dir() / "extensions-builtin" / "hypertile" / "hypertile.py"
    spec = importlib.util.spec_from_file_location("webui_hypertile", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def hook(hypertile, unet, enable: bool, tile: int = 128) -> None:
    hypertile.hypertile_hook_model(unet, 256, 256, enable=enable, tile_size_max=tile, swap_size=1, max_depth=3)


def test_hypertile_on_keeps_graphs_off_and_its_wrappers_are_recognised(hypertile):
    unet = tiny_unet()
    hook(hypertile, unet, enable=True)
    wrapped = instance_forwards(unet)
    assert wrapped and all(is_hypertile_forward(name, forward) for name, forward in wrapped.items())
    assert replaced_forwards_reason(unet) is not None  # unknown to a host that does not key on it
    assert replaced_forwards_reason(unet, is_hypertile_forward) is None
    assert "Hypertile is on" in hypertile_blocker(unet)
    hook(hypertile, unet, enable=False)
    assert hypertile_blocker(unet) is None


def test_turning_hypertile_on_or_resizing_its_tiles_changes_the_graph_key(hypertile):
    unet = tiny_unet()
    hook(hypertile, unet, enable=True)
    hook(hypertile, unet, enable=False)
    off = hypertile_key(unet)
    hook(hypertile, unet, enable=False, tile=256)
    assert hypertile_key(unet) != off  # the tile size is part of the key
    hook(hypertile, unet, enable=False)
    assert hypertile_key(unet) == off
    cache = GraphCache(StandInCapturer())
    apply_cuda_graph(unet, cache, lambda: hypertile_key(unet))
    call(unet)
    call(unet)
    hook(hypertile, unet, enable=True)
    with torch.no_grad():
        call(unet)  # a host would not graph this pass at all; the key alone already refuses a stale replay
    assert cache.stats.captures == 2 and cache.stats.replays == 3
