"""Tier 2: DeepCache in a live A1111 1.10.1 (the tiny SD1 checkpoint on the CPU; the CUDA graph
played by the fault extension's "cpu-graphs").

Shallow steps run as the interval says and the infotext claims DeepCache only once they ran; with
the graph the full and the shallow step replay as two graphs, giving eager DeepCache's image
exactly; the hires pass takes its own interval; where it cannot run it steps aside with a note;
an XYZ axis and bad values behave like every switch's; the WebUI is as before afterwards.
"""

from __future__ import annotations

import json

import pytest
from harness import http_json
from helpers import (
    BASE_REQUEST,
    GRAPH,
    STEPS,
    assert_restored,
    cpu_graphs,
    params_of,
    pixels,
    post,
    speedkit,
    status,
    txt2img,
)

OFF = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, False, False]
HIRES = {
    "enable_hr": True,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 6,
    "denoising_strength": 0.6,
}


def deepcache(interval, branch=0, hr_interval=0, start=0, end=0, switches=OFF) -> dict:
    """The accordion's args with DeepCache (positions 15-19, after the mode)."""
    return speedkit(*switches, "Custom", interval, branch, hr_interval, start, end)


def deepcache_counts(passes: list[dict]) -> list:
    return [p["deepcache"] for p in passes]


def test_interval_2_runs_every_other_step_shallow_and_claims_deepcache(webui, pristine):
    response = txt2img(webui, deepcache(2))
    params = params_of(response)
    assert str(params["Speedkit DeepCache"]) == "2"
    assert "Speedkit note" not in params
    last = status(webui)["last_generation"]
    assert deepcache_counts(last["passes"]) == [{"full": STEPS // 2, "shallow": STEPS // 2}]
    assert pixels(response) != pristine["pixels"]  # lossy: shallow steps reuse older deep features
    assert status(webui)["deepcache_active"] is False
    assert pixels(txt2img(webui)) == pristine["pixels"]  # the next generation without it: the WebUI's own
    assert_restored(webui, pristine)


def test_the_window_keeps_the_first_and_last_steps_full(webui, pristine):
    txt2img(webui, deepcache(3, start=2, end=2))
    # steps 0-7: full at 0,1 (start), 2, 5 (every third from 2), 6,7 (end); shallow 3, 4
    assert deepcache_counts(status(webui)["last_generation"]["passes"]) == [{"full": 6, "shallow": 2}]


def test_with_the_graph_full_and_shallow_steps_replay_the_image_of_eager_deepcache(webui, pristine):
    eager = pixels(txt2img(webui, deepcache(2)))
    response = txt2img(webui, {**deepcache(2, switches=GRAPH), **cpu_graphs()})
    params = params_of(response)
    assert str(params["Speedkit CUDA graph"]) == "True" and str(params["Speedkit DeepCache"]) == "2"
    last = status(webui)["last_generation"]
    assert last["passes"][0]["cuda_graph"]["replays"] == STEPS and last["passes"][0]["cuda_graph"]["eager_calls"] == {}
    assert last["passes"][0]["deepcache"] == {"full": STEPS // 2, "shallow": STEPS // 2}
    assert pixels(response) == eager
    assert status(webui)["cuda_graph"]["active"] is False


def test_the_hires_pass_takes_its_own_interval(webui, pristine):
    response = txt2img(webui, deepcache(2, hr_interval=1), **HIRES)
    params = params_of(response)
    assert str(params["Speedkit DeepCache"]) == "2" and str(params["Speedkit DeepCache hr"]) == "1"
    first, hires = deepcache_counts(status(webui)["last_generation"]["passes"])
    assert first == {"full": STEPS // 2, "shallow": STEPS // 2} and hires is None  # 1 = no caching there

    txt2img(webui, deepcache(1, hr_interval=3), **HIRES)
    first, hires = deepcache_counts(status(webui)["last_generation"]["passes"])
    assert first is None and hires["shallow"] > 0 and hires["full"] > 0


def test_img2img_counts_the_steps_it_runs(webui, pristine):
    """img2img runs fewer steps than asked (denoising 0.5: the last half): DeepCache counts the
    denoiser's own steps, so every other one of those is shallow, starting with a full one."""
    request = {**BASE_REQUEST, "init_images": [txt2img(webui)["images"][0]], "denoising_strength": 0.5}
    stock = post(webui, "/sdapi/v1/img2img", request)[1]
    code, body = post(webui, "/sdapi/v1/img2img", {**request, "alwayson_scripts": deepcache(2)})
    assert code == 200, body
    assert str(params_of(body)["Speedkit DeepCache"]) == "2"
    (counts,) = deepcache_counts(status(webui)["last_generation"]["passes"])
    ran = counts["full"] + counts["shallow"]
    assert ran < STEPS and counts == {"full": (ran + 1) // 2, "shallow": ran // 2}
    assert pixels(body) != pixels(stock)
    assert pixels(post(webui, "/sdapi/v1/img2img", request)[1]) == pixels(stock)
    assert_restored(webui, pristine)


def test_a_hires_interval_without_hires_fix_is_not_claimed(webui, pristine):
    response = txt2img(webui, deepcache(1, hr_interval=3))
    assert not any(key.startswith("Speedkit DeepCache") for key in params_of(response))
    assert pixels(response) == pristine["pixels"]


def test_a_branch_deeper_than_the_unet_steps_aside_with_a_note_and_claims_nothing(webui, pristine):
    response = txt2img(webui, deepcache(2, branch=11))
    params = params_of(response)
    assert "Speedkit DeepCache" not in params
    assert "DeepCache not used for this pass: deepcache.branch 11 is deeper than this UNet's" in params["Speedkit note"]
    assert pixels(response) == pristine["pixels"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ([*OFF, "Custom", 11], "deepcache_interval (args[15])"),
        ([*OFF, "Custom", 3, 12], "deepcache_branch (args[16])"),
        ([*OFF, "Custom", 3, 0, 0, -1], "deepcache_start (args[18])"),
    ],
)
def test_bad_deepcache_values_are_a_422_naming_the_argument(webui, pristine, args, field):
    code, body = post(webui, "/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "alwayson_scripts": speedkit(*args)})
    assert code == 422, body
    assert field in json.dumps(body)


def test_an_xyz_axis_of_the_deepcache_interval(webui, pristine):
    info = http_json(webui.url + "/sdapi/v1/script-info")
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axis_labels = xyz["args"][0]["choices"]
    x_type = axis_labels.index("[Speedkit] DeepCache interval")
    script_args = [x_type, "1, 3", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    infotexts = json.loads(txt2img(webui, None, script_name="x/y/z plot", script_args=script_args)["info"])["infotexts"]
    assert any("Speedkit DeepCache: 3" in text for text in infotexts)
    assert any("Speedkit DeepCache" not in text for text in infotexts[1:])
    assert_restored(webui, pristine)
