"""Tier-2 harness: a real AUTOMATIC1111 WebUI (v1.10.1) on CPU with a tiny random SD1 checkpoint.

Three parts:

* ``build_assets`` makes, once per cache directory, everything the WebUI needs offline:
  - an HF cache holding ``openai/clip-vit-large-patch14``'s tokenizer files and config, generated
    from open-clip-torch's ``bpe_simple_vocab_16e6.txt.gz`` (same vocabulary and ids as the real
    tokenizer; checked against open_clip's own tokenizer while building);
  - ``tiny-sd1.safetensors``: an SD1-architecture LatentDiffusion (ldm UNet, AutoencoderKL,
    FrozenCLIPEmbedder) at toy width, random weights, with ``tiny-sd1.yaml`` beside it (the WebUI
    takes a checkpoint's config from a ``.yaml`` of the same basename). The text encoder is a
    4-layer, 64-wide CLIPTextModel whose tokenizer and config sit in ``tiny-clip/``, named by the
    yaml's ``cond_stage_config.params.version``.
  The build runs in the WebUI's own Python (it needs torch, transformers, open_clip and ldm), as
  ``python harness.py build CACHE_DIR``.
* ``WebUIServer``: a context manager that starts ``launch.py`` headless on 127.0.0.1 with this
  repository linked in as an extension, waits until the API answers, and stops it on exit.
* Settings from the environment: ``SPEEDKIT_A1111_DIR`` (the checkout), ``SPEEDKIT_A1111_PYTHON``
  (its interpreter; default: the checkout's ``venv/bin/python``, else the Python running the tests),
  ``SPEEDKIT_TIER2_CACHE`` (where built assets are kept between runs; default: a folder in the
  system temp dir), ``SPEEDKIT_TIER2_KEEP=1`` (keep each run's data dir and log).

This module imports only the standard library at the top, so importing it never fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_NAME = "sd-webui-speedkit"
CLIP_REPO_ID = "openai/clip-vit-large-patch14"
# Bump when anything the build writes changes; a cache built by another version is rebuilt.
ASSETS_VERSION = "2"
CHECKPOINT_NAME = "tiny-sd1"
SEED = 1234

# The flags the WebUI runs with (all exist in modules/cmd_args.py of v1.10.1). --no-half: CPU.
# The WebUI's default safe unpickling stays on (the test checkpoint is a safetensors file).
# --api is added unless a server is started without it (WebUIServer(api=False)).
BASE_ARGS = (
    "--skip-prepare-environment",
    "--skip-install",
    "--use-cpu",
    "all",
    "--no-half",
    "--no-download-sd-model",
    "--do-not-download-clip",
    "--server-name",
    "127.0.0.1",
)

# Text encoder: CLIP ViT-L/14's text config, shrunk. 4 layers keep "clip skip" values up to 4 valid.
TINY_CLIP_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "projection_dim": 64,
}
# UNet and VAE of configs/v1-inference.yaml, shrunk. The VAE keeps four levels (the WebUI assumes a
# latent 1/8 of the image size); GroupNorm(32) needs channel counts that are multiples of 32.
TINY_UNET = {
    "model_channels": 32,
    "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 1,
    "channel_mult": [1, 2, 2],
    "num_heads": 4,
    "context_dim": TINY_CLIP_TEXT["hidden_size"],
}
TINY_VAE = {"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def a1111_dir() -> Path | None:
    """The A1111 checkout named by SPEEDKIT_A1111_DIR, or None when the variable is unset."""
    value = os.environ.get("SPEEDKIT_A1111_DIR", "").strip()
    return Path(value).expanduser().resolve() if value else None


def a1111_python(webui_dir: Path) -> str:
    """SPEEDKIT_A1111_PYTHON, else the checkout's venv/bin/python, else the Python running this."""
    value = os.environ.get("SPEEDKIT_A1111_PYTHON", "").strip()
    if value:
        return value
    venv_python = webui_dir / "venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def cache_dir() -> Path:
    """SPEEDKIT_TIER2_CACHE, else <system temp>/speedkit-tier2."""
    value = os.environ.get("SPEEDKIT_TIER2_CACHE", "").strip()
    path = Path(value).expanduser() if value else Path(tempfile.gettempdir()) / "speedkit-tier2"
    return path.resolve()  # absolute: the yaml names files in it, and the WebUI runs in its own cwd


# --------------------------------------------------------------------------------------------
# Assets (built in the WebUI's Python)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assets:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / f"{CHECKPOINT_NAME}.safetensors"

    @property
    def hf_home(self) -> Path:
        return self.root / "hf"

    @property
    def stamp(self) -> Path:
        return self.root / "ASSETS_VERSION"

    def complete(self) -> bool:
        return self.stamp.is_file() and self.stamp.read_text().strip() == ASSETS_VERSION


def build_assets(webui_dir: Path, python: str, root: Path | None = None) -> Assets:
    """Build the checkpoint and HF cache under `root` (default: cache_dir()) unless already there."""
    assets = Assets((Path(root).resolve() if root else cache_dir()) / f"v{ASSETS_VERSION}")
    if assets.complete():
        return assets
    ldm_path = str(webui_dir / "repositories" / "stable-diffusion-stability-ai")
    env = dict(os.environ, PYTHONPATH=ldm_path, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [python, str(Path(__file__).resolve()), "build", str(assets.root)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not assets.complete():
        raise RuntimeError(f"building tier-2 assets failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return assets


def _bpe_merges() -> list[str]:
    """The BPE merges of CLIP's tokenizer, from open-clip-torch's bpe_simple_vocab_16e6.txt.gz."""
    import gzip

    import open_clip.tokenizer

    lines = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8").split("\n")
    return lines[1 : 49152 - 256 - 2 + 1]  # the slice CLIP's SimpleTokenizer takes


def write_clip_tokenizer(dest: Path) -> None:
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json as the real repo has."""
    from open_clip.tokenizer import bytes_to_unicode

    merges = _bpe_merges()
    vocab = list(bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)

    def token(content: str) -> dict:
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        }

    special = {
        "bos_token": token("<|startoftext|>"),
        "eos_token": token("<|endoftext|>"),
        "unk_token": token("<|endoftext|>"),
        "pad_token": "<|endoftext|>",
    }
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": CLIP_REPO_ID,
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def check_tokenizer(directory: Path) -> None:
    """transformers' CLIPTokenizer from `directory` gives open_clip's token ids (prompts depend on it)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    reference = SimpleTokenizer()
    tokenizer = CLIPTokenizer.from_pretrained(str(directory))
    prompts = [
        "masterpiece, best quality, masterpiece, asuka langley sitting cross legged on a chair",
        "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, jpeg artifacts,signature",
        "(a cat:1.2) [dog] <lora:x:0.5> BREAK Ünïcödé façade — 東京 🐱 don't stop!!  x",
    ]
    for prompt in prompts:
        expected = [49406, *reference.encode(prompt), 49407]
        got = tokenizer(prompt)["input_ids"]
        assert got == expected, (prompt, got, expected)
    assert tokenizer.bos_token_id == 49406 and tokenizer.eos_token_id == 49407 and tokenizer.pad_token_id == 49407
    assert tokenizer.model_max_length == 77 and tokenizer.get_vocab()[",</w>"] == 267


def clip_config(text_overrides: dict | None = None):
    """openai/clip-vit-large-patch14's CLIPConfig; `text_overrides` shrinks the text model."""
    from transformers import CLIPConfig

    text = {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
        "layer_norm_eps": 1e-5,
        **(text_overrides or {}),
    }
    vision = {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=text["projection_dim"])


def write_hf_cache(hf_home: Path) -> None:
    """An offline HF cache (HF_HOME layout) with the tokenizer and config of openai/clip-vit-large-patch14."""
    revision = "0" * 40  # any commit id; refs/main points at it
    repo = hf_home / "hub" / ("models--" + CLIP_REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    write_clip_tokenizer(snapshot)
    clip_config().to_json_file(str(snapshot / "config.json"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    # transformers migrates (and, offline, warns about) a cache without this marker.
    (hf_home / "hub" / "version.txt").write_text("1")


def tiny_model_yaml(clip_dir: Path, unet: dict | None = None) -> dict:
    """configs/v1-inference.yaml with a shrunk UNet (`unet` overrides its parameters), VAE and text
    encoder."""
    return {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.00085,
                "linear_end": 0.0120,
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": 1000,
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": 64,
                "channels": 4,
                "cond_stage_trainable": False,
                "conditioning_key": "crossattn",
                "monitor": "val/loss_simple_ema",
                "scale_factor": 0.18215,
                "use_ema": False,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 32,
                        "in_channels": 4,
                        "out_channels": 4,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "use_checkpoint": False,
                        "legacy": False,
                        **TINY_UNET,
                        **(unet or {}),
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": 4,
                        "monitor": "val/rec_loss",
                        "ddconfig": {
                            "double_z": True,
                            "z_channels": 4,
                            "resolution": 256,
                            "in_channels": 3,
                            "out_ch": 3,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                            **TINY_VAE,
                        },
                        "lossconfig": {"target": "torch.nn.Identity"},
                    },
                },
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                    "params": {"version": str(clip_dir)},
                },
            },
        }
    }


def instantiate_with_random_text_encoder(model_config):
    """Build an ldm model from its config with a randomly initialised CLIP text encoder: ldm's
    FrozenCLIPEmbedder calls `CLIPTextModel.from_pretrained`, and offline there are no weights,
    only the cached config. Seed torch first for a reproducible model."""
    import ldm.modules.encoders.modules as encoders
    from ldm.util import instantiate_from_config
    from transformers import CLIPTextConfig, CLIPTextModel

    class RandomCLIPTextModel:
        @staticmethod
        def from_pretrained(version):
            return CLIPTextModel(CLIPTextConfig.from_pretrained(version))

    original, encoders.CLIPTextModel = encoders.CLIPTextModel, RandomCLIPTextModel
    try:
        return instantiate_from_config(model_config)
    finally:
        encoders.CLIPTextModel = original


def write_tiny_checkpoint(
    root: Path,
    final_root: Path | None = None,
    *,
    name: str = CHECKPOINT_NAME,
    unet: dict | None = None,
    half: bool = False,
    description: str = f"tiny random SD1 for tests, assets v{ASSETS_VERSION}",
) -> Path:
    """<name>.safetensors + <name>.yaml + tiny-clip/ under `root`; returns the checkpoint path.

    The yaml names tiny-clip/ by absolute path; `final_root` is where `root` will be moved to.
    `unet` overrides the tiny UNet's parameters; `half` stores fp16; `description` is the file's
    only metadata.
    """
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    sys.path.insert(0, str(REPO_ROOT))
    from lib_speedkit.bench.models import rerandomise  # no zero-initialised layer left

    clip_dir = root / "tiny-clip"
    write_clip_tokenizer(clip_dir)
    clip_config(TINY_CLIP_TEXT).to_json_file(str(clip_dir / "config.json"))

    config = OmegaConf.create(tiny_model_yaml(clip_dir, unet))
    OmegaConf.save(tiny_model_yaml((final_root or root) / clip_dir.name, unet), root / f"{name}.yaml")

    torch.manual_seed(SEED)
    model = instantiate_with_random_text_encoder(config.model)
    # ldm zero-initialises proj_out, the ResBlocks' last convs and the output conv: with those at
    # zero, attention cannot change the output. Re-randomise the whole UNet (fan-in scaled).
    rerandomise(model.model.diffusion_model, SEED)
    give_text_encoder_an_offset(model.cond_stage_model, SEED)
    check_text_encoder_mean(model.cond_stage_model)

    state = {
        key: (tensor.detach().half() if half else tensor.detach().clone()).contiguous()
        for key, tensor in model.state_dict().items()
    }
    path = root / f"{name}.safetensors"
    # One metadata key only: safetensors writes several keys in random order, changing the sha256.
    save_file(state, str(path), metadata={"speedkit": description})
    return path


def give_text_encoder_an_offset(embedder, seed: int) -> None:
    """A freshly initialised CLIP text model ends in a LayerNorm with bias 0, so every token vector
    it outputs has mean 0 and the whole embedding's mean is float noise around 0. The WebUI's
    default "Original" emphasis rescales by `old_mean / new_mean`, which is then 0/0 (NaN) or
    huge. Real checkpoints have a learnt, non-zero bias: give the tiny one a random bias too."""
    import torch

    norm = embedder.transformer.text_model.final_layer_norm
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        norm.bias.copy_(0.5 + 0.25 * torch.randn(norm.bias.shape, generator=generator))


def check_text_encoder_mean(embedder) -> None:
    """The tiny text encoder's embedding of test prompts has a mean well away from 0 (else the
    WebUI's emphasis turns it into NaN: see give_text_encoder_an_offset)."""
    import torch

    prompts = ["", "a photograph of an astronaut riding a horse", "masterpiece, best quality, a cat"]
    with torch.no_grad():
        for prompt in prompts:
            tokens = embedder.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt")
            mean = float(embedder.transformer(input_ids=tokens["input_ids"]).last_hidden_state.mean())
            assert abs(mean) > 0.1, (prompt, mean)


def _build(root: Path) -> None:
    """Entry point of `python harness.py build ROOT` (in the WebUI's Python).

    Builds in a fresh sibling folder and renames it into place, so that an interrupted or
    concurrent build never leaves a half-written cache behind.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=root.name + ".partial-"))
    try:
        write_hf_cache(partial / "hf")
        check_tokenizer(next((partial / "hf" / "hub").glob("models--*/snapshots/*")))
        write_tiny_checkpoint(partial, final_root=root)
        check_tokenizer(partial / "tiny-clip")
        (partial / "ASSETS_VERSION").write_text(ASSETS_VERSION + "\n")
        if not Assets(root).complete():
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def basic_auth_header(auth: tuple[str, str]) -> dict[str, str]:
    import base64

    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def http_json(
    url: str,
    payload: dict | None = None,
    timeout: float = 600,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> object:
    """GET (payload None) or POST JSON (HTTP Basic `auth`, extra `headers`); returns the decoded
    answer. Raises urllib errors."""
    data = None if payload is None else json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json", **(basic_auth_header(auth) if auth else {}), **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=all_headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


class WebUIServer:
    """A WebUI subprocess with this repository as an extension, on a free port of 127.0.0.1.

    with WebUIServer() as server:
        http_json(server.url + "/sdapi/v1/txt2img", {...})
    """

    def __init__(
        self,
        webui_dir: Path | str | None = None,
        python: str | None = None,
        *,
        extra_args: tuple[str, ...] = (),
        extra_extensions: dict[str, Path | str] | None = None,
        api_only: bool = False,
        api: bool = True,
        auth: tuple[str, str] | None = None,
        startup_timeout: float = 300,
        workdir: Path | str | None = None,
        keep_workdir: bool | None = None,
    ) -> None:
        found = Path(webui_dir) if webui_dir else a1111_dir()
        if found is None:
            raise RuntimeError("SPEEDKIT_A1111_DIR is not set")
        self.webui_dir = found.resolve()
        self.python = python or a1111_python(self.webui_dir)
        self.extra_args = tuple(extra_args)
        # Extension folder name -> source folder; each is symlinked into <data dir>/extensions.
        self.extensions = {EXTENSION_NAME: REPO_ROOT, **(extra_extensions or {})}
        self.api_only = api_only
        self.api = api or api_only
        self.auth = auth  # credentials the readiness check sends (the server's --api-auth / --gradio-auth)
        self.startup_timeout = startup_timeout
        self._workdir_arg = Path(workdir) if workdir else None
        self.workdir: Path | None = None
        # A temporary workdir (data dir + log) is removed on exit unless kept (SPEEDKIT_TIER2_KEEP=1).
        self.keep_workdir = bool(os.environ.get("SPEEDKIT_TIER2_KEEP")) if keep_workdir is None else keep_workdir
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.assets: Assets | None = None
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "webui.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 50) -> str:
        return "\n".join(deque(self.log_text().splitlines(), maxlen=lines))

    def command(self) -> list[str]:
        assert self.assets is not None
        args = [self.python, "launch.py", *BASE_ARGS, "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir), "--ckpt", str(self.assets.checkpoint)]
        if self.api_only:
            args.append("--nowebui")
        elif self.api:
            args.append("--api")
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        assert self.assets is not None
        # COMMANDLINE_ARGS would add flags (paths_internal appends it to argv); HF cache variables
        # would win over HF_HOME.
        dropped = {"COMMANDLINE_ARGS", "PYTHONPATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"}
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update(
            HF_HOME=str(self.assets.hf_home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            GRADIO_ANALYTICS_ENABLED="False",
            PYTHONUNBUFFERED="1",
        )
        return env

    def start(self) -> WebUIServer:
        if not (self.webui_dir / "launch.py").is_file():
            raise RuntimeError(f"{self.webui_dir} is not an A1111 checkout (no launch.py)")
        self.assets = build_assets(self.webui_dir, self.python)
        self.workdir = self._workdir_arg or Path(tempfile.mkdtemp(prefix="speedkit-webui-"))
        # --data-dir moves the extensions folder too (paths_internal.extensions_dir), so the
        # checkout itself is never touched.
        extensions = self.data_dir / "extensions"
        extensions.mkdir(parents=True, exist_ok=True)
        for name, source in self.extensions.items():
            link = extensions / name
            if not link.exists():
                link.symlink_to(Path(source).resolve(), target_is_directory=True)
        self.port = free_port()
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.webui_dir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches any children
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"WebUI exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.api:
                    http_json(self.url + "/sdapi/v1/sd-models", timeout=10, auth=self.auth)
                # Extension routes are added in on_app_started, after the API answers.
                http_json(self.url + "/speedkit/v1/status", timeout=10, auth=self.auth)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - started > self.startup_timeout:
                raise TimeoutError(f"WebUI not ready after {self.startup_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(1)

    def stop(self, grace: float = 20) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def cleanup(self) -> None:
        """Remove the workdir if this object created it and it is not to be kept."""
        if self.workdir is not None and self._workdir_arg is None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def client(self):
        """A `webuiapi.WebUIApi` for this server (imported lazily: tier 1 does not install it)."""
        import webuiapi

        return webuiapi.WebUIApi(host="127.0.0.1", port=self.port)

    def __enter__(self) -> WebUIServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "build":
        _build(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} build CACHE_DIR")
