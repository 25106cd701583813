"""Tier 2: Speedkit beside the real sd-webui-controlnet extension (its public repository; not part of
this project and not in CI, which cannot reach GitHub: point SPEEDKIT_CONTROLNET_DIR at a checkout).

ControlNet replaces the UNet's forward on the instance for every generation with a unit (in its
`process`) and puts a forward back afterwards. The CUDA graph (played on the CPU by the fault
extension) must step aside with a note while ControlNet drives the UNet, give the image the WebUI
gives without Speedkit, and replay again in the next generation without ControlNet. DeepCache (which
runs the UNet's blocks itself and would drop ControlNet's residuals) steps aside the same way.

Models: an SD1 checkpoint with SD1.5's UNet layout and a random ControlNet for it
(controlnet_assets.py), because ControlNet builds every SD1 control model with that layout.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
from pathlib import Path

import pytest
from controlnet_assets import ASSETS_VERSION, CHECKPOINT, CONTROL_MODEL
from harness import WebUIServer, a1111_dir, a1111_python, cache_dir, http_json
from helpers import GRAPH, STEPS, cpu_graphs, graph_calls, params_of, pixels, speedkit, status, txt2img

CONTROLNET_DIR = os.environ.get("SPEEDKIT_CONTROLNET_DIR", "").strip()
HERE = Path(__file__).resolve().parent
FAULT_EXTENSION = HERE / "fault_extension"  # CUDA graphs played on the CPU

pytestmark = pytest.mark.skipif(
    not CONTROLNET_DIR or a1111_dir() is None,
    reason="set SPEEDKIT_CONTROLNET_DIR to a checkout of Mikubill/sd-webui-controlnet (and SPEEDKIT_A1111_DIR)",
)


def build_models() -> Path:
    root = cache_dir() / f"controlnet-v{ASSETS_VERSION}"
    if (root / "ASSETS_VERSION").is_file():
        return root
    webui = a1111_dir()
    env = dict(os.environ, PYTHONPATH=str(webui / "repositories" / "stable-diffusion-stability-ai"))
    subprocess.run(
        [a1111_python(webui), str(HERE / "controlnet_assets.py"), str(root)], env=env, check=True, timeout=900
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = build_models()
    workdir = tmp_path_factory.mktemp("controlnet-webui")
    control_dir = workdir / "data" / "models" / "ControlNet"
    control_dir.mkdir(parents=True)
    (control_dir / f"{CONTROL_MODEL}.safetensors").symlink_to(models / f"{CONTROL_MODEL}.safetensors")
    extensions = {"sd-webui-controlnet": Path(CONTROLNET_DIR), "speedkit-test-faults": FAULT_EXTENSION}
    checkpoint = models / f"{CHECKPOINT}.safetensors"  # its yaml beside it
    with WebUIServer(
        extra_extensions=extensions, extra_args=("--ckpt", str(checkpoint)), workdir=workdir, startup_timeout=600
    ) as webui:
        yield webui


@pytest.fixture(scope="module")
def control_model(server) -> str:
    names = http_json(server.url + "/controlnet/model_list")["model_list"]
    matching = [name for name in names if name.startswith(CONTROL_MODEL)]
    assert matching, names
    return matching[0]


def hint_image() -> str:
    """A 64×64 pattern as the control image (used as is: no preprocessor)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    pattern = np.stack([(x * 4) % 256, (y * 4) % 256, ((x // 8 + y // 8) % 2) * 255], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pattern).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def controlnet_unit(model: str) -> dict:
    unit = {
        "enabled": True,
        "module": "none",
        "model": model,
        "image": hint_image(),
        "weight": 1.0,
        "resize_mode": "Crop and Resize",
        "processor_res": 64,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": "Balanced",
        "pixel_perfect": False,
    }
    return {"controlnet": {"args": [unit]}}


def test_with_a_control_unit_the_graph_steps_aside_with_a_note_and_the_image_is_the_webui_s(server, control_model):
    without_control = pixels(txt2img(server))
    stock = txt2img(server, controlnet_unit(control_model))
    assert pixels(stock) != without_control  # the random control model does steer the image

    fast = txt2img(server, {**speedkit(*GRAPH), **cpu_graphs(), **controlnet_unit(control_model)})
    params = params_of(fast)
    assert "Speedkit CUDA graph" not in params
    assert "another extension replaced the UNet's forward (" in params["Speedkit note"]
    assert "forward_webui" in params["Speedkit note"]  # ControlNet's function: the user can tell who
    assert pixels(fast) == pixels(stock)
    assert graph_calls(status(server)["last_generation"]["passes"]) == (0, 0)


def test_after_controlnet_the_graph_replays_again_and_changes_no_pixel(server, control_model):
    txt2img(server, {**speedkit(*GRAPH), **cpu_graphs(), **controlnet_unit(control_model)})
    stock = pixels(txt2img(server))
    fast = txt2img(server, {**speedkit(*GRAPH), **cpu_graphs()})
    assert str(params_of(fast)["Speedkit CUDA graph"]) == "True"
    assert graph_calls(status(server)["last_generation"]["passes"]) == (STEPS, 0)
    assert pixels(fast) == stock


def deepcache_with(switches: list, interval: int = 2) -> dict:
    return speedkit(*switches, "Custom", interval)


def test_with_a_control_unit_deepcache_steps_aside_with_a_note_and_the_image_is_the_webui_s(server, control_model):
    """ControlNet adds its residuals inside its own UNet forward: DeepCache's steps would drop them."""
    stock = txt2img(server, controlnet_unit(control_model))
    cached = txt2img(server, {**deepcache_with(GRAPH), **cpu_graphs(), **controlnet_unit(control_model)})
    params = params_of(cached)
    assert "Speedkit DeepCache" not in params
    assert (
        "DeepCache not used for this pass: another extension replaced the UNet's forward (" in params["Speedkit note"]
    )
    assert "forward_webui" in params["Speedkit note"]
    assert pixels(cached) == pixels(stock)
    assert status(server)["last_generation"]["passes"][0]["deepcache"] is None


def test_after_controlnet_deepcache_runs_again(server, control_model):
    txt2img(server, {**deepcache_with(GRAPH), **cpu_graphs(), **controlnet_unit(control_model)})
    cached = txt2img(server, {**deepcache_with(GRAPH), **cpu_graphs()})
    assert str(params_of(cached)["Speedkit DeepCache"]) == "2"
    assert status(server)["last_generation"]["passes"][0]["deepcache"] == {"full": STEPS // 2, "shallow": STEPS // 2}
