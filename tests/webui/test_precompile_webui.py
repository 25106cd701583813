"""Tier 2: precompiling the compiled UNet in a live WebUI (POST /speedkit/v1/precompile), on the
CPU with the fault extension's CPU graphs and pass-through compiler switched on for every
generation (inductor needs a GPU: docs/BENCHMARKS.md has the H200 figures)."""

from __future__ import annotations

import pytest
from harness import http_json
from helpers import assert_restored, cpu_graphs, graph_calls, params_of, pixels, post, speedkit, status, txt2img

COMPILED_SWITCHES = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, True, True]
COMPILED = [*COMPILED_SWITCHES, "Custom", 1, 0, 0, 0, 0, True]


@pytest.fixture
def cpu_compile(webui):
    http_json(webui.url + "/speedkit-test/cpu-compile", {"on": True})
    yield
    http_json(webui.url + "/speedkit-test/cpu-compile", {"on": False})


def test_precompiled_shapes_make_the_first_generation_replay_without_compiling(webui, pristine, cpu_compile):
    result = http_json(
        webui.url + "/speedkit/v1/precompile", {"sizes": "64x64, 96x64", "batch_sizes": [1], "speedkit": COMPILED}
    )
    assert [(s["width"], s["height"], s["batch_size"]) for s in result["shapes"]] == [(64, 64, 1), (96, 64, 1)]
    assert all(s["compiled"] for s in result["shapes"]) and not result["interrupted"]
    assert {tuple(g["latent"]) for g in result["compiled_graphs"]} >= {(2, 4, 8, 8), (2, 4, 8, 12)}
    compiles = len(status(webui)["compiled_unet"]["compiles"])
    response = txt2img(webui, speedkit(*COMPILED), width=96)
    last = status(webui)["last_generation"]
    assert str(params_of(response)["Speedkit compiled UNet"]) == "True"
    assert sum(p["cuda_graph"]["captures"] for p in last["passes"]) == 0  # captured by the precompile
    assert graph_calls(last["passes"])[1] == 0
    assert len(status(webui)["compiled_unet"]["compiles"]) == compiles  # nothing compiled again
    assert_restored(webui, pristine)


def test_bad_precompile_requests_name_the_field(webui):
    for body, field in (({"sizes": "64x64, 65x64"}, "sizes[1]"), ({"batch_sizes": [9]}, "batch_sizes[0]")):
        code, answer = post(webui, "/speedkit/v1/precompile", body)
        assert code == 422 and field in answer["detail"]


def test_the_compiled_unet_compiles_the_vae_decoder_too_and_restores_it(webui, pristine, cpu_compile):
    response = txt2img(webui, speedkit(*COMPILED))
    decoder = status(webui)["last_generation"]["vae_decoder"]
    assert decoder == {"compiled": 1, "eager_calls": {}}  # one image, one compiled decode
    compiles = [(c["what"], c["shape"]) for c in status(webui)["compiled_unet"]["compiles"]]
    assert ("VAE decoder", [1, 4, 8, 8]) in compiles  # the decoder's latent, one image at a time
    assert pixels(response) == pristine["pixels"]  # this compiler changes nothing; inductor: BENCHMARKS.md
    txt2img(webui, speedkit(*COMPILED_SWITCHES))  # without compile_unet: the decoder's own forward
    assert status(webui)["last_generation"]["vae_decoder"] is None
    assert pixels(txt2img(webui)) == pristine["pixels"]
    assert_restored(webui, pristine)


def test_a_decoder_another_extension_wrapped_is_left_alone_with_a_note(webui, pristine, cpu_compile):
    response = txt2img(webui, {**speedkit(*COMPILED), **cpu_graphs("vae-wrapped")})
    params = params_of(response)
    assert "compiled VAE decoder not used: the Decoder's forward is already replaced" in params["Speedkit note"]
    assert str(params["Speedkit compiled UNet"]) == "True"  # the UNet still is
    assert status(webui)["last_generation"]["vae_decoder"] is None
    assert pixels(response) == pristine["pixels"]
    assert_restored(webui, pristine)
