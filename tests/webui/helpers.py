"""Shared tier-2 helpers: requests, the switch arg lists, reading results, the tiny LoRA."""

from __future__ import annotations

import base64
import io
import json
import urllib.error

from harness import http_json

STEPS = 8
BASE_REQUEST = {
    "prompt": "masterpiece, best quality, a cat sitting on a chair",
    "negative_prompt": "lowres, blurry",
    "steps": STEPS,
    "width": 64,
    "height": 64,
    "sampler_name": "Euler",
    "scheduler": "Automatic",
    "cfg_scale": 7,
    "seed": 2870305590,
    "save_images": False,
    "send_images": True,
}
ALL_SWITCHES = [True, "sdp-math", "fraction", 0.5, 0.5, 0.0, 2, 2, 2, False, -1, True]
FAULTS = "speedkit test faults"


def speedkit(*args) -> dict:
    return {"speedkit": {"args": list(args)}}


def cpu_graphs(kind: str = "cpu-graphs") -> dict:
    """The fault extension's CUDA graphs played on the CPU ("cpu-graphs-copy": every capture fails)."""
    return {FAULTS: {"args": [-1, kind]}}


def graph_calls(passes: list[dict]) -> tuple[int, int]:
    """(replays, eager calls) over the sampling passes of a generation record."""
    replays = sum(p["cuda_graph"]["replays"] for p in passes)
    eager = sum(sum(p["cuda_graph"]["eager_calls"].values()) for p in passes)
    return replays, eager


def post(server, path: str, payload: dict) -> tuple[int, dict]:
    try:
        return 200, http_json(server.url + path, payload)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "{}")


def txt2img(server, alwayson: dict | None = None, **fields) -> dict:
    status, body = post(server, "/sdapi/v1/txt2img", {**BASE_REQUEST, **fields, "alwayson_scripts": alwayson or {}})
    assert status == 200, body
    return body


def status(server) -> dict:
    return http_json(server.url + "/speedkit/v1/status")


def infotext_of(response: dict) -> str:
    return json.loads(response["info"])["infotexts"][0]


def pixels(response: dict) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(response["images"][0]))).convert("RGB").tobytes()


def assert_restored(server, pristine_state: dict) -> None:
    now = status(server)
    before = pristine_state["status"]
    assert now["generation_active"] is False
    assert now["cfg_wrapper_active"] is False
    assert now["tome_active"] is False
    assert now["unet_memory_format"] == before["unet_memory_format"]
    assert now["attention"]["current"] == before["attention"]["current"]


LEAN = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, False, True]
GRAPH = [True, "keep", "off", 0.75, 0.0, 0.0, 1, 2, 2, False, -1, False, True, False]
PROBE = {FAULTS: {"args": [-1, "probe"]}}
TINY_LORA = "speedkit-tiny"
TINY_LOHA = "speedkit-tiny-loha"


def params_of(response: dict) -> dict:
    return json.loads(response["info"])["extra_generation_params"]


def save_network(server, name: str, tensors: dict) -> None:
    """A network file in the server's Lora folder, listed by the built-in."""
    from safetensors.torch import save_file

    folder = server.data_dir / "models" / "Lora"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    http_json(server.url + "/sdapi/v1/refresh-loras", {})


def write_tiny_lora(server) -> None:
    """A real LoRA file for the tiny model's time_embed.0 (Linear 32 -> 128), loadable by the Lora built-in."""
    import torch

    generator = torch.Generator().manual_seed(5)
    tensors = {
        "lora_unet_time_embed_0.lora_down.weight": torch.randn(4, 32, generator=generator),
        "lora_unet_time_embed_0.lora_up.weight": torch.randn(128, 4, generator=generator),
        "lora_unet_time_embed_0.alpha": torch.tensor(4.0),
    }
    save_network(server, TINY_LORA, tensors)


def write_tiny_loha(server) -> None:
    """A LyCORIS LoHa file for the same layer (the built-in's network_hada type)."""
    import torch

    generator = torch.Generator().manual_seed(6)
    prefix = "lora_unet_time_embed_0"
    tensors = {
        f"{prefix}.hada_w1_a": 0.5 * torch.randn(128, 4, generator=generator),
        f"{prefix}.hada_w1_b": 0.5 * torch.randn(4, 32, generator=generator),
        f"{prefix}.hada_w2_a": 0.5 * torch.randn(128, 4, generator=generator),
        f"{prefix}.hada_w2_b": 0.5 * torch.randn(4, 32, generator=generator),
        f"{prefix}.alpha": torch.tensor(4.0),
    }
    save_network(server, TINY_LOHA, tensors)
