"""Tier 2: what holds for every generation, whatever runs around it — sampling passes, nested
generations, settings saves, failures after applying — in a live A1111 1.10.1."""

from __future__ import annotations

import json

import pytest
from harness import WebUIServer, a1111_dir
from helpers import (
    BASE_REQUEST,
    FAULTS,
    GRAPH,
    LEAN,
    STEPS,
    assert_restored,
    params_of,
    pixels,
    post,
    speedkit,
    status,
    txt2img,
    write_tiny_lora,
)

ADAPTIVE = [True, "keep", "adaptive", 0.0]  # tau 0: skips from the first step whose similarity is >= 0
HIRES = {
    "enable_hr": True,
    "hr_scale": 2,
    "hr_upscaler": "Latent",
    "hr_second_pass_steps": 4,
    "denoising_strength": 0.5,
}


def faults(kind: str) -> dict:
    return {FAULTS: {"args": [-1, kind]}}


@pytest.mark.parametrize("workload", [{"n_iter": 2}, HIRES], ids=["batch-count-2", "hires"])
def test_the_adaptive_cutoff_starts_every_sampling_pass_with_the_negative_prompt(webui, pristine, workload):
    txt2img(webui, speedkit(*ADAPTIVE), **workload)
    passes = status(webui)["last_generation"]["passes"]
    assert len(passes) == 2
    assert passes[0]["unet_calls"]["without_uncond"] > 0  # the cutoff did cut: the test can fail
    for sampling_pass in passes:
        assert sampling_pass["unet_calls"]["with_uncond"] >= 1, passes
    assert passes[1]["unet_calls"]["with_uncond"] == passes[0]["unet_calls"]["with_uncond"] or "hr" in str(workload)
    assert_restored(webui, pristine)


@pytest.mark.parametrize("cutoff", [["fraction", 0.5], ["sigma", 3.0]], ids=["fraction", "sigma"])
def test_no_host_option_is_written_while_sampling(webui, pristine, cutoff):
    """A settings save during a skipped step would otherwise make the value permanent."""
    response = txt2img(webui, {**speedkit(True, "keep", *cutoff), **faults("options")})
    assert status(webui)["last_generation"]["unet_calls"]["without_uncond"] > 0
    # opts.data at every UNet call is as before sampling (skip_early_cond 1.0 or s_min_uncond_all
    # True written there would be saved by a settings save at that moment)
    params = params_of(response)
    assert "skip_early_cond=1.0" not in params["Speedkit test options before"]
    assert params["Speedkit test options"] == params["Speedkit test options before"]


def test_a_nested_generation_keeps_its_lora_and_leaves_the_outer_generation_whole(webui, pristine):
    """ADetailer runs a generation from postprocess_image with the same scripts and args."""
    write_tiny_lora(webui)
    outer = txt2img(webui, {**speedkit(*LEAN), **faults("nested")}, n_iter=2)
    nested_probes = params_of(outer)["Speedkit test nested"].split("; ")
    assert len(nested_probes) == 2  # one nested generation per outer image
    for probe in nested_probes:
        assert probe.endswith("networks=speedkit-tiny")  # its LoRA was in the UNet while it sampled
    last = status(webui)["last_generation"]
    assert last["nested"] is False and last["refused"] is None
    assert last["applied"] == {"Speedkit lean step": "True"}
    assert last["unet_calls"] == {"with_uncond": 2 * STEPS, "without_uncond": 0}  # both outer images counted
    assert [p["unet_calls"]["with_uncond"] for p in last["passes"]] == [STEPS, STEPS]
    assert_restored(webui, pristine)
    assert status(webui)["lean_step_active"] is False


def test_a_failure_after_switches_were_applied_undoes_them_and_fails_the_generation(webui, pristine):
    request = {
        **BASE_REQUEST,
        "alwayson_scripts": {**speedkit(True, "sdp-math", "off", 0.75, 0.5), **faults("tome-fails")},
    }
    request["alwayson_scripts"]["speedkit"]["args"] += [0.0, 1, 2, 2, False, -1, True]  # and channels-last
    code, body = post(webui, "/sdapi/v1/txt2img", request)
    assert code == 500, body
    message = "Speedkit did not run this generation: RuntimeError: speedkit test fault: ToMe could not be applied"
    assert message in json.dumps(body)
    last = status(webui)["last_generation"]
    assert last["refused"] == message and last["applied"] == {}
    assert_restored(webui, pristine)
    assert pixels(txt2img(webui)) == pristine["pixels"]


@pytest.mark.parametrize(
    ("entry", "detail"),
    [
        ({"args": {"enabled": True}}, "speedkit: args: {'enabled': True} is not allowed; expected a list"),
        ({"args": 1}, "speedkit: args: 1 is not allowed"),
        ({"args": None}, "speedkit: args: None is not allowed"),
        ({"args": "true"}, "speedkit: args: 'true' is not allowed"),
        ({"args": [True] * 200}, "speedkit: args: '200 values' is not allowed; expected a list of at most 21 values"),
        ([True, "sdp"], "speedkit: alwayson_scripts.speedkit: [True, 'sdp'] is not allowed; expected an object"),
        ({"args": [True, "keep", "off", 0.75, 0.5, 0.0, 1, 2, 2, True, 2**64]}, "tome_seed (args[10])"),
    ],
    ids=["dict", "number", "null", "string", "200-values", "not-an-object", "seed-2**64"],
)
def test_malformed_alwayson_args_are_a_422_naming_what_is_wrong(webui, pristine, entry, detail):
    before = status(webui)["last_generation"]
    code, body = post(webui, "/sdapi/v1/txt2img", {**BASE_REQUEST, "alwayson_scripts": {"speedkit": entry}})
    assert code == 422, body
    assert detail in body["detail"]
    assert status(webui)["last_generation"] == before


@pytest.fixture(scope="module")
def medvram_webui():
    if a1111_dir() is None:
        pytest.skip("tier 2 skipped: set SPEEDKIT_A1111_DIR")
    with WebUIServer(api_only=True, extra_args=("--medvram",)) as server:
        yield server


def test_under_medvram_the_graph_stays_off_with_the_reason(medvram_webui):
    params = params_of(txt2img(medvram_webui, speedkit(*GRAPH)))
    assert "Speedkit CUDA graph" not in params
    assert "--medvram/--lowvram move the UNet between CPU and GPU" in params["Speedkit note"]
