"""Tier-2 smoke tests: the WebUI starts with the extension, serves its UI and API, and generates."""

from __future__ import annotations

import base64
import json
import urllib.request

from harness import http_json

TINY_TXT2IMG = {
    "prompt": "masterpiece, best quality, a cat sitting on a chair",
    "negative_prompt": "lowres, blurry",
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "steps": 2,
    "cfg_scale": 7,
    "seed": 1,
    "width": 64,
    "height": 64,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_ui_page_is_served(webui):
    with urllib.request.urlopen(webui.url + "/", timeout=60) as response:
        page = response.read().decode(errors="replace")
    assert response.status == 200
    assert "gradio" in page.lower()


def test_txt2img_returns_an_image(webui):
    result = http_json(webui.url + "/sdapi/v1/txt2img", TINY_TXT2IMG)
    assert len(result["images"]) == 1
    image = base64.b64decode(result["images"][0])
    assert image.startswith(PNG_SIGNATURE)
    info = json.loads(result["info"])
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 2)
    assert "Model: tiny-sd1" in info["infotexts"][0]


def test_speedkit_script_is_listed(webui):
    # Needs the extension's scripts/speedkit.py: the WebUI lists scripts by their lower-cased title.
    scripts = http_json(webui.url + "/sdapi/v1/scripts")
    assert "speedkit" in scripts["txt2img"], scripts
    assert "speedkit" in scripts["img2img"], scripts
