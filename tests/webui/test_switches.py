"""Tier 2: Speedkit's per-generation switches in a live A1111 1.10.1, driven over HTTP."""

from __future__ import annotations

import json
import threading
import time

import pytest
from harness import http_json
from helpers import (
    ALL_SWITCHES,
    BASE_REQUEST,
    FAULTS,
    GRAPH,
    LEAN,
    PROBE,
    STEPS,
    TINY_LORA,
    assert_restored,
    infotext_of,
    params_of,
    pixels,
    post,
    speedkit,
    status,
    txt2img,
    write_tiny_lora,
)


def test_kernel_variants_can_be_chosen_in_settings_too(webui, pristine):
    configured = http_json(webui.url + "/sdapi/v1/options")["cross_attention_optimization"]
    variant = "sdp-math - PyTorch SDPA, math kernel only: deterministic, full attention matrix (Speedkit)"
    http_json(webui.url + "/sdapi/v1/options", {"cross_attention_optimization": variant})
    try:
        assert status(webui)["attention"]["current"] == variant
        txt2img(webui, speedkit(True, "sdp"))
        assert status(webui)["attention"]["current"] == variant  # restored to the configured variant
    finally:
        http_json(webui.url + "/sdapi/v1/options", {"cross_attention_optimization": configured})
    assert_restored(webui, pristine)


def test_script_info_describes_the_arguments(webui):
    scripts = http_json(webui.url + "/sdapi/v1/script-info")
    ours = [s for s in scripts if s["name"] == "speedkit" and not s["is_img2img"]]
    assert len(ours) == 1 and ours[0]["is_alwayson"]
    labels = [arg["label"] for arg in ours[0]["args"]]
    assert labels[:3] == ["Speedkit", "Attention backend", "Negative-guidance cutoff"]
    assert len(labels) == 21 and labels[12:15] == ["CUDA graph (fast path)", "Lean step", "Speed mode"]
    assert labels[15] == "DeepCache N (1 = off)"  # settings added later follow the mode


def test_kernel_variants_are_registered_as_webui_optimizers(webui, pristine):
    unavailable = status(webui)["attention"]["unavailable"]
    assert "sdp-math" not in unavailable and "sdp-flash" not in unavailable  # run on CPU
    assert "CUDA" in unavailable["sdp-cudnn"]
    assert "--xformers" in unavailable["xformers"]


@pytest.mark.parametrize(
    ("args", "expected_keys"),
    [
        ([True, "sdp-math"], {"Speedkit attention": "sdp-math"}),
        ([True, "V1 - original v1"], {"Speedkit attention": "v1"}),
        ([True, "doggettx"], {"Speedkit attention": "doggettx"}),
        ([True, "keep", "fraction", 0.5], {"Speedkit cutoff": "fraction 0.5"}),
        ([True, "keep", "sigma", 1.0], {"Speedkit cutoff": "sigma 1.0"}),
        ([True, "keep", "adaptive", 0.9], {"Speedkit cutoff": "adaptive 0.9"}),
        ([True, "keep", "off", 0.75, 0.5], {"Speedkit ToMe": "0.5"}),
        ([True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, True], {"Speedkit channels-last": "True"}),
        (
            ALL_SWITCHES,
            {
                "Speedkit attention": "sdp-math",
                "Speedkit cutoff": "fraction 0.5",
                "Speedkit ToMe": "0.5",
                "Speedkit ToMe downsample": "2",
                "Speedkit channels-last": "True",
            },
        ),
    ],
    ids=["sdp-math", "v1", "doggettx", "fraction", "sigma", "adaptive", "tome", "channels-last", "all"],
)
def test_each_switch_runs_writes_infotext_and_is_restored(webui, pristine, args, expected_keys):
    response = txt2img(webui, speedkit(*args))
    params = json.loads(response["info"])["extra_generation_params"]
    for key, value in expected_keys.items():
        assert str(params[key]) == value, (key, params)
    assert not any(
        key.startswith("Speedkit") for key in params if key not in expected_keys and key != "Speedkit cutoff"
    )
    last = status(webui)["last_generation"]
    assert last["refused"] is None and last["finished"] is not None
    for key, value in expected_keys.items():
        assert last["applied"][key] == value
    assert_restored(webui, pristine)


def test_fraction_cutoff_halves_the_unet_batch_for_the_skipped_steps(webui, pristine):
    response = txt2img(webui, speedkit(True, "keep", "fraction", 0.5))
    calls = status(webui)["last_generation"]["unet_calls"]
    assert calls == {"with_uncond": STEPS // 2, "without_uncond": STEPS // 2}
    assert "NGMS" not in json.loads(response["info"])["extra_generation_params"]


def test_sigma_cutoff_skips_every_step_below_the_threshold(webui, pristine):
    txt2img(webui, speedkit(True, "keep", "sigma", 3.0))
    calls = status(webui)["last_generation"]["unet_calls"]
    # Euler, 8 steps, SD1 schedule: sigmas 14.6, 7.7, 4.5, 2.7, 1.6, 0.9, 0.4, 0.03 (from step 3 on < 3)
    assert calls == {"with_uncond": 3, "without_uncond": 5}


def test_without_speedkit_nothing_is_counted_and_images_are_unchanged(webui, pristine):
    with_speedkit = pixels(txt2img(webui, speedkit(*ALL_SWITCHES)))
    assert with_speedkit != pristine["pixels"]  # ToMe is lossy: the image is sensitive to the switches
    assert pixels(txt2img(webui)) == pristine["pixels"]
    last = status(webui)["last_generation"]
    assert last["enabled"] is False and last["unet_calls"] is None and last["applied"] == {}
    assert_restored(webui, pristine)


def test_status_during_a_generation_shows_the_switches_applied(webui, pristine):
    seen = []
    worker = threading.Thread(target=lambda: seen.append(txt2img(webui, speedkit(*ALL_SWITCHES), steps=60)))
    worker.start()
    during = None
    deadline = time.monotonic() + 300
    while worker.is_alive() and time.monotonic() < deadline:
        current = status(webui)
        if current["generation_active"] and current["tome_active"]:
            during = current
            break
        time.sleep(0.2)
    worker.join(600)
    assert during is not None, "never saw the generation running"
    assert during["unet_memory_format"] == "channels_last"
    assert during["attention"]["current"].startswith("sdp-math")
    assert during["cfg_wrapper_active"] is True
    assert seen and "images" in seen[0]
    assert_restored(webui, pristine)


@pytest.mark.parametrize("kind", ["error", "oom"])
def test_an_exception_mid_sampling_leaves_nothing_patched(webui, pristine, kind):
    request = {**BASE_REQUEST, "alwayson_scripts": {**speedkit(*ALL_SWITCHES), FAULTS: {"args": [5, kind]}}}
    code, body = post(webui, "/sdapi/v1/txt2img", request)
    assert code == 500, body
    assert "speedkit test fault" in json.dumps(body)
    assert status(webui)["last_generation"]["finished"] is not None
    assert_restored(webui, pristine)
    assert pixels(txt2img(webui)) == pristine["pixels"]


def test_an_interrupt_mid_sampling_leaves_nothing_patched(webui, pristine):
    results = []
    worker = threading.Thread(target=lambda: results.append(txt2img(webui, speedkit(*ALL_SWITCHES), steps=200)))
    worker.start()
    deadline = time.monotonic() + 300
    while not status(webui)["generation_active"] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    http_json(webui.url + "/sdapi/v1/interrupt", {})
    worker.join(600)
    assert results, "the interrupted request did not return"
    calls = status(webui)["last_generation"]["unet_calls"]
    assert 0 < calls["with_uncond"] + calls["without_uncond"] < 200
    assert_restored(webui, pristine)
    assert pixels(txt2img(webui)) == pristine["pixels"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ([True, "quantum"], "attention (args[1])"),
        ([True, "keep", "off", 0.75, 0.9], "tome_ratio (args[4])"),
        ([True, "keep", "fraction", 1.5], "cutoff_value (args[3])"),
        ([True, "keep", "off", 0.75, 0.5, 0.0, 3], "tome_max_downsample (args[6])"),
        ([True, "sdp-cudnn"], "sdp-cudnn"),
        (["maybe"], "enabled (args[0])"),
    ],
)
def test_bad_input_is_refused_with_422_naming_the_field_and_nothing_runs(webui, pristine, args, field):
    before = status(webui)["last_generation"]
    code, body = post(webui, "/sdapi/v1/txt2img", {**BASE_REQUEST, "alwayson_scripts": speedkit(*args)})
    assert code == 422, body
    assert field in body["detail"]
    assert status(webui)["last_generation"] == before  # no generation started
    assert_restored(webui, pristine)


def test_pasting_the_infotext_reproduces_the_plan(webui, pristine):
    first = txt2img(webui, speedkit(True, "sdp-math", "fraction", 0.75, 0.3, 0.0, 2, 2, 2, True, 99, True))
    first_record = status(webui)["last_generation"]
    txt2img(webui)  # a generation without Speedkit in between
    pasted = txt2img(webui, None, infotext=infotext_of(first))
    record = status(webui)["last_generation"]
    assert record["started"] > first_record["started"] and record["enabled"] is True
    assert record["applied"] == first_record["applied"]
    assert len(record["applied"]) == 7  # attention, cutoff, ToMe, downsample, random, seed, channels-last
    assert pixels(pasted) == pixels(first)


def test_img2img_runs_the_switches_too(webui, pristine):
    init = txt2img(webui)["images"][0]
    request = {**BASE_REQUEST, "init_images": [init], "denoising_strength": 0.6}
    code, body = post(webui, "/sdapi/v1/img2img", {**request, "alwayson_scripts": speedkit(*ALL_SWITCHES)})
    assert code == 200, body
    params = json.loads(body["info"])["extra_generation_params"]
    assert str(params["Speedkit ToMe"]) == "0.5"
    assert_restored(webui, pristine)


def test_hires_pass_uses_its_own_tome_ratio(webui, pristine):
    hires = {
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": "Latent",
        "hr_second_pass_steps": 2,
        "denoising_strength": 0.5,
    }
    response = txt2img(webui, speedkit(True, "keep", "off", 0.75, 0.5, 0.25), **hires)
    params = json.loads(response["info"])["extra_generation_params"]
    assert str(params["Speedkit ToMe hr"]) == "0.25"
    assert_restored(webui, pristine)


def test_an_xyz_grid_axis_per_switch(webui, pristine):
    info = http_json(webui.url + "/sdapi/v1/script-info")
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axis_labels = xyz["args"][0]["choices"]
    for label in (
        "[Speedkit] Attention backend",
        "[Speedkit] Guidance cutoff",
        "[Speedkit] ToMe ratio",
        "[Speedkit] ToMe max downsample",
        "[Speedkit] Channels-last",
    ):
        assert label in axis_labels
    x_type = axis_labels.index("[Speedkit] ToMe ratio")
    script_args = [x_type, "0, 0.5", [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]
    response = txt2img(webui, None, script_name="x/y/z plot", script_args=script_args)
    infotexts = json.loads(response["info"])["infotexts"]
    assert any("Speedkit ToMe: 0.5" in text for text in infotexts)
    assert any("Speedkit ToMe" not in text for text in infotexts[1:])
    assert_restored(webui, pristine)


# --------------------------------------------------------------------------- lean step and CUDA graph


def test_the_probe_sees_the_lora_wrappers_without_the_lean_step(webui, pristine):
    response = txt2img(webui, PROBE)
    assert "Linear.forward=network_Linear_forward" in params_of(response)["Speedkit test probe"]


def test_lean_step_bypasses_the_lora_wrappers_during_sampling_bit_exactly(webui, pristine):
    response = txt2img(webui, {**speedkit(*LEAN), **PROBE})
    params = params_of(response)
    assert "Linear.forward=forward " in params["Speedkit test probe"]
    assert str(params["Speedkit lean step"]) == "True"
    assert pixels(response) == pristine["pixels"]
    assert status(webui)["lean_step_active"] is False
    assert "Linear.forward=network_Linear_forward" in params_of(txt2img(webui, PROBE))["Speedkit test probe"]


def test_lean_step_with_a_lora_is_bit_identical_to_the_lora_and_the_next_image_to_none(webui, pristine):
    """The built-in's weights are merged into the layers before the pass, so the wrappers can go."""
    write_tiny_lora(webui)
    lora_prompt = BASE_REQUEST["prompt"] + f" <lora:{TINY_LORA}:1>"
    with_lora = txt2img(webui, prompt=lora_prompt)
    assert pixels(with_lora) != pristine["pixels"]  # the LoRA changes the image: the test can fail

    lean_with_lora = txt2img(webui, {**speedkit(*LEAN), **PROBE}, prompt=lora_prompt)
    params = params_of(lean_with_lora)
    assert "Linear.forward=forward " in params["Speedkit test probe"]  # bypassed during sampling
    assert str(params["Speedkit lean step"]) == "True"
    assert pixels(lean_with_lora) == pixels(with_lora)

    after_lora = txt2img(webui, speedkit(*LEAN))  # the LoRA's weights are taken out before the pass
    assert str(params_of(after_lora)["Speedkit lean step"]) == "True"
    assert pixels(after_lora) == pristine["pixels"]
    assert pixels(txt2img(webui)) == pristine["pixels"]


def test_with_lora_functional_the_lean_step_steps_aside_and_says_why(webui, pristine):
    write_tiny_lora(webui)
    http_json(webui.url + "/sdapi/v1/options", {"lora_functional": True})
    try:
        lora_prompt = BASE_REQUEST["prompt"] + f" <lora:{TINY_LORA}:1>"
        params = params_of(txt2img(webui, speedkit(*LEAN), prompt=lora_prompt))
    finally:
        http_json(webui.url + "/sdapi/v1/options", {"lora_functional": False})
    assert "Speedkit lean step" not in params
    assert "lora_functional" in params["Speedkit note"]


def test_cuda_graph_without_a_gpu_runs_eagerly_says_why_and_claims_nothing(webui, pristine):
    response = txt2img(webui, {**speedkit(*GRAPH), **PROBE})
    params = params_of(response)
    assert "Speedkit CUDA graph" not in params
    assert "CUDA graph not used for this pass: the WebUI runs on cpu" in params["Speedkit note"]
    assert "unet.forward=NoneType" in params["Speedkit test probe"]
    assert pixels(response) == pristine["pixels"]
    current = status(webui)
    assert current["cuda_graph"]["active"] is False and current["cuda_graph"]["cached_graphs"] == 0


def test_the_fraction_cutoff_leaves_no_host_skip_infotext(webui, pristine):
    params = params_of(txt2img(webui, speedkit(True, "keep", "fraction", 0.5)))
    assert not {"NGMS", "NGMS all steps", "Skip Early CFG"} & set(params)


# --------------------------------------------------------------------------- speed modes


def test_a_named_mode_through_the_api_applies_its_switches_and_says_so(webui, pristine):
    response = txt2img(webui, {"speedkit": {"mode": "fast"}})
    params = params_of(response)
    assert params["Speedkit mode"] == "Fast"
    assert params["Speedkit cutoff"] == "fraction 0.5" and params["Speedkit channels-last"] == "True"
    assert "Speedkit CUDA graph" not in params and "runs on cpu" in params["Speedkit note"]  # claimed only if it ran
    assert status(webui)["last_generation"]["requested"]["Speedkit mode"] == "Fast"
    assert_restored(webui, pristine)


def test_fourteen_values_from_before_the_modes_mean_custom(webui, pristine):
    params = params_of(
        txt2img(webui, speedkit(True, "keep", "off", 0.75, 0.5, 0.0, 1, 2, 2, False, -1, False, False, False))
    )
    assert params["Speedkit ToMe"] == 0.5 or str(params["Speedkit ToMe"]) == "0.5"
    assert "Speedkit mode" not in params and "Speedkit channels-last" not in params


def test_a_mode_axis_in_the_xyz_plot(webui, pristine):
    info = http_json(webui.url + "/sdapi/v1/script-info")
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axis_labels = xyz["args"][0]["choices"]
    x_type = axis_labels.index("[Speedkit] Mode")
    # an axis with choices takes its values from the dropdown list (the third value), not the text
    script_args = [x_type, "", ["Off", "Lossless"], 0, "", [], 0, "", [], True, False, False, False, False, False]
    script_args += [False, 0, False]
    infotexts = json.loads(txt2img(webui, None, script_name="x/y/z plot", script_args=script_args)["info"])["infotexts"]
    assert any("Speedkit mode: Lossless" in text for text in infotexts)
    assert any("Speedkit" not in text for text in infotexts[1:])
    assert_restored(webui, pristine)
