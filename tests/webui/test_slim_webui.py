"""Tier 2: slimming in a live WebUI (POST /speedkit/v1/slim); the slimmed file loads and generates."""

from __future__ import annotations

import base64
import io
import shutil

import pytest
from harness import http_json
from helpers import post

CHECK = {"steps": 2, "size": 64}


@pytest.fixture(scope="module")
def model_copy(webui):
    """The tiny checkpoint (+ its .yaml) copied into this WebUI's models folder, so outputs land there too."""
    folder = webui.data_dir / "models" / "Stable-diffusion"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(webui.assets.checkpoint, folder / "tiny-copy.safetensors")
    shutil.copy(webui.assets.checkpoint.with_suffix(".yaml"), folder / "tiny-copy.yaml")
    http_json(webui.url + "/sdapi/v1/refresh-checkpoints", {})
    return folder / "tiny-copy.safetensors"


def current_checkpoint(webui) -> str:
    return http_json(webui.url + "/sdapi/v1/options")["sd_model_checkpoint"]


def test_slimming_through_the_route_writes_a_checked_fp16_file_and_restores_the_model(webui, model_copy):
    before = current_checkpoint(webui)
    code, result = post(webui, "/speedkit/v1/slim", {"checkpoint": str(model_copy), "compare_images": True, **CHECK})
    assert code == 200, result
    output = model_copy.with_name("tiny-copy-slim.safetensors")
    assert result["output"] == str(output) and output.is_file()
    assert result["yaml"] == str(model_copy.with_name("tiny-copy-slim.yaml"))
    assert result["architecture"] == "SD1"
    assert result["converted"] and all(change.endswith("-> float16") for change in result["converted"])
    assert result["size_after"] < 0.6 * result["size_before"]
    checks = result["checks"]
    assert checks["load_test"]["ok"], checks["load_test"]
    assert checks["load_test"]["config"].endswith("tiny-copy-slim.yaml")
    assert checks["load_speed_output"]["warm"]["mb_per_s"] > 0
    difference = checks["image_difference"]
    assert difference["max_abs"] <= 16 and (difference["identical"] or difference["psnr_db"] > 30), difference
    assert current_checkpoint(webui) == before  # the previous model is loaded back
    code, again = post(webui, "/speedkit/v1/slim", {"checkpoint": str(model_copy), "load_test": False})
    assert code == 422 and "exists" in again["detail"]  # never overwritten unless asked


def test_the_slimmed_checkpoint_loads_as_the_webuis_model_and_generates(webui, model_copy):
    output = model_copy.with_name("tiny-copy-slim.safetensors")
    if not output.exists():
        post(webui, "/speedkit/v1/slim", {"checkpoint": str(model_copy), "load_test": False, "load_speed": False})
    before = current_checkpoint(webui)
    http_json(webui.url + "/sdapi/v1/refresh-checkpoints", {})
    try:
        http_json(webui.url + "/sdapi/v1/options", {"sd_model_checkpoint": output.name})
        assert current_checkpoint(webui).startswith("tiny-copy-slim.safetensors")
        response = http_json(
            webui.url + "/sdapi/v1/txt2img",
            {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1, "sampler_name": "Euler"},
        )
        from PIL import Image

        image = Image.open(io.BytesIO(base64.b64decode(response["images"][0])))
        assert image.size == (64, 64)
    finally:
        http_json(webui.url + "/sdapi/v1/options", {"sd_model_checkpoint": before})
    assert current_checkpoint(webui) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"checkpoint": "no-such-model"}, "checkpoint"),
        ({"checkpoint": "x", "dtype": "fp8"}, "dtype"),
        ({"checkpoint": "x", "colour": 1}, "colour"),
        ({"checkpoint": "x", "size": 100}, "size"),
    ],
)
def test_bad_requests_are_422_naming_the_field(webui, body, field):
    code, result = post(webui, "/speedkit/v1/slim", body)
    assert code == 422 and result["detail"].startswith(f"speedkit slim: {field}:"), result
