"""Tier 2: the fast path in a live A1111 1.10.1, the CUDA graph played on the CPU (the fault
extension's "cpu-graphs": a capture freezes the call as a graph does, a replay runs only that).

The infotext claims the graph only for the calls that replayed; a failed capture costs one eager
call and says why; graphs outlive generations without the switch; LoRAs and LyCORIS LoHa run
through the graph with their weights merged, bit-identical to the WebUI without Speedkit; with the
built-in computing networks on every call (lora_functional) the graph steps aside and says why.
"""

from __future__ import annotations

import pytest
from harness import http_json
from helpers import (
    BASE_REQUEST,
    GRAPH,
    STEPS,
    TINY_LOHA,
    TINY_LORA,
    assert_restored,
    cpu_graphs,
    graph_calls,
    params_of,
    pixels,
    post,
    speedkit,
    status,
    txt2img,
    write_tiny_loha,
    write_tiny_lora,
)

LOSSLESS = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, True, True]


def test_a_pass_that_replayed_every_call_claims_the_graph_and_changes_no_pixel(webui, pristine):
    response = txt2img(webui, {**speedkit(*GRAPH), **cpu_graphs()})
    params = params_of(response)
    assert str(params["Speedkit CUDA graph"]) == "True"
    last = status(webui)["last_generation"]
    assert graph_calls(last["passes"]) == (STEPS, 0)
    assert last["cuda_graph"]["replays"] == STEPS and last["cuda_graph"]["eager_calls"] == {}
    assert pixels(response) == pristine["pixels"]
    assert_restored(webui, pristine)


def test_a_failed_capture_claims_nothing_costs_one_eager_call_and_says_why(webui, pristine):
    response = txt2img(webui, {**speedkit(*GRAPH), **cpu_graphs("cpu-graphs-copy")})
    params = params_of(response)
    assert "Speedkit CUDA graph" not in params
    assert "capture failed: RuntimeError: Cannot copy between CPU and CUDA tensors" in params["Speedkit note"]
    eager = status(webui)["last_generation"]["passes"][0]["cuda_graph"]["eager_calls"]
    assert sum(count for reason, count in eager.items() if reason.startswith("capture failed: ")) == 1
    assert sum(count for reason, count in eager.items() if "earlier in this pass" in reason) == STEPS - 1
    assert pixels(response) == pristine["pixels"]


def test_some_calls_replayed_and_some_eager_is_said_as_a_fraction(webui, pristine):
    """The fraction cutoff halves the batch from step 4 on: a second graph. When only that one's
    capture fails, the pass gives the graph up from there: the infotext says how many calls
    replayed, and the note why not all."""
    fraction = [True, "keep", "fraction", 0.5, 0.0, 0.0, 1, 2, 2, False, -1, False, True, False]
    params = params_of(txt2img(webui, {**speedkit(*fraction), **cpu_graphs("cpu-graphs-copy-1")}))
    assert str(params["Speedkit CUDA graph"]) == f"{STEPS // 2}/{STEPS} calls"
    assert "ran eagerly: capture failed" in params["Speedkit note"]
    assert graph_calls(status(webui)["last_generation"]["passes"]) == (STEPS // 2, STEPS // 2)


def test_switching_speedkit_off_and_on_again_keeps_the_graphs(webui, pristine):
    txt2img(webui, {**speedkit(*GRAPH), **cpu_graphs()})
    txt2img(webui)  # a generation without Speedkit in between
    txt2img(webui, {**speedkit(*GRAPH), **cpu_graphs()})
    passes = status(webui)["last_generation"]["passes"]
    assert passes[0]["cuda_graph"]["captures"] == 0 and passes[0]["cuda_graph"]["replays"] == STEPS


NETWORKS = {"LoRA": (write_tiny_lora, TINY_LORA), "LyCORIS LoHa": (write_tiny_loha, TINY_LOHA)}


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_a_network_runs_through_the_graph_bit_identical_to_the_webui_without_speedkit(webui, pristine, kind):
    write, name = NETWORKS[kind]
    write(webui)
    lora_prompt = BASE_REQUEST["prompt"] + f" <lora:{name}:1>"
    stock_with_lora = pixels(txt2img(webui, prompt=lora_prompt))
    assert stock_with_lora != pristine["pixels"]
    response = txt2img(webui, {**speedkit(*LOSSLESS), **cpu_graphs()}, prompt=lora_prompt)
    params = params_of(response)
    assert str(params["Speedkit CUDA graph"]) == "True" and str(params["Speedkit lean step"]) == "True"
    assert pixels(response) == stock_with_lora
    # the next image without the LoRA: its weights were taken out before the pass
    after = txt2img(webui, {**speedkit(*LOSSLESS), **cpu_graphs()})
    assert str(params_of(after)["Speedkit CUDA graph"]) == "True"
    assert pixels(after) == pristine["pixels"]
    assert_restored(webui, pristine)


def test_with_lora_functional_the_graph_steps_aside_and_says_why(webui, pristine):
    write_tiny_lora(webui)
    lora_prompt = BASE_REQUEST["prompt"] + f" <lora:{TINY_LORA}:1>"
    http_json(webui.url + "/sdapi/v1/options", {"lora_functional": True})
    try:
        stock_with_lora = pixels(txt2img(webui, prompt=lora_prompt))
        response = txt2img(webui, {**speedkit(*GRAPH), **cpu_graphs()}, prompt=lora_prompt)
    finally:
        http_json(webui.url + "/sdapi/v1/options", {"lora_functional": False})
    params = params_of(response)
    assert "Speedkit CUDA graph" not in params
    assert "lora_functional" in params["Speedkit note"]
    assert pixels(response) == stock_with_lora


# --------------------------------------------------------------------------- the compiled UNet


def compiled_graph(kind: str = "cpu-compile") -> dict:
    """The graph and the compiled UNet (arg 20), with the fault extension's CPU graphs and compiler."""
    switches = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, True, False]
    return {**speedkit(*switches, "Custom", 1, 0, 0, 0, 0, True), **cpu_graphs(kind)}


def test_the_compiled_unet_is_compiled_once_replayed_and_claimed(webui, pristine):
    response = txt2img(webui, compiled_graph())
    params = params_of(response)
    assert str(params["Speedkit CUDA graph"]) == "True" and str(params["Speedkit compiled UNet"]) == "True"
    assert params["Speedkit test compiled"] == "method,method"  # the UNet's forward and the VAE decoder's, once
    assert graph_calls(status(webui)["last_generation"]["passes"]) == (STEPS, 0)
    assert pixels(response) == pristine["pixels"]  # this compiler changes nothing; inductor: BENCHMARKS.md
    compiled = status(webui)["compiled_unet"]
    assert compiled["unavailable"] is None and compiled["failures"] == []
    assert compiled["cache_folder"].endswith("speedkit-compile/inductor")


def test_when_compiling_fails_the_graph_replays_the_uncompiled_unet_and_says_why(webui, pristine):
    """At a size no compiled graph was captured for yet (a cached one would replay compiled kernels)."""
    response = txt2img(webui, compiled_graph("cpu-compile-fails"), width=128)
    params = params_of(response)
    assert "Speedkit compiled UNet" not in params
    assert str(params["Speedkit CUDA graph"]) == "True"
    assert "compiling failed, the graph replayed the uncompiled UNet: TorchDynamoException" in params["Speedkit note"]
    assert pixels(response) == pixels(txt2img(webui, width=128))


def test_interrupting_a_compile_ends_the_wait_and_the_generation_runs_without_it(webui):
    """The first call of a new shape compiles (here: until interrupted); the progress text says so,
    Interrupt answers within seconds, and the infotext claims no compiled UNet."""
    import threading
    import time

    answer: dict = {}
    request = threading.Thread(
        target=lambda: answer.update(response=txt2img(webui, compiled_graph("cpu-compile-slow"), width=192))
    )
    request.start()
    deadline = time.monotonic() + 120
    textinfo = ""
    while "compiling the UNet" not in textinfo and time.monotonic() < deadline:
        time.sleep(0.2)
        textinfo = http_json(webui.url + "/sdapi/v1/progress?skip_current_image=true")["textinfo"] or ""
    assert "compiling the UNet for 192×64, batch 2 (first time only" in textinfo
    interrupted_at = time.monotonic()
    http_json(webui.url + "/sdapi/v1/interrupt", {})
    request.join(60)
    assert not request.is_alive() and time.monotonic() - interrupted_at < 20  # not the 30 s compile
    params = params_of(answer["response"])
    assert "Speedkit compiled UNet" not in params
    assert "compiling was interrupted: this call ran uncompiled" in params["Speedkit note"]
    assert status(webui)["compiled_unet"]["failures"] == []


def test_the_compiled_unet_without_the_graph_is_a_422_naming_it(webui, pristine):
    switches = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, False, False]
    code, body = post(
        webui,
        "/sdapi/v1/txt2img",
        {**BASE_REQUEST, "alwayson_scripts": speedkit(*switches, "Custom", 1, 0, 0, 0, 0, True)},
    )
    assert code == 422 and "compile_unet (args[20])" in str(body)
