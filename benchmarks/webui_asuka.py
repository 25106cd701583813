"""Whole-WebUI benchmark on a GPU: a real A1111 1.10.1 with this repository as an extension, a
random-weight SD1.5-size checkpoint built on the machine, and the Asuka preset through the
extension's bench endpoint (POST /speedkit/v1/bench, one matrix per resolution: every
configuration in one server process, alternating order, medians).

  python benchmarks/webui_asuka.py --a1111 DIR --work DIR --out DIR [--runs 5] [--sizes 512,1024]

Needs, importable by this Python: the WebUI's requirements (A1111 1.10.1's requirements_versions.txt
in versions that run on this torch), and `ldm` from the checkout's repositories/ for building the
checkpoint. docs/BENCHMARKS.md says how the GPU machine was prepared (packages it lacked travelled
as wheels) and has the results.

Configurations (stock = A1111 with "sdp - scaled dot product" chosen in Settings, Speedkit off):
stock, the extension's patches taken out (to measure what the installed extension costs when
off), each Speedkit switch alone, the CUDA-graph fast path alone and with each switch, and the
best lossless and best overall combinations, and the compiled UNet (`compile_unet`) on the
lossless switches (its first run at a size compiles: the warm-up). For each: sampler it/s, end-to-end it/s, GPU
utilisation while sampling, VRAM, image difference vs stock.

Outputs in --out: results.json (everything), report.md (the tables), webui.log.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "webui"))
sys.path.insert(0, str(REPO))
import harness  # noqa: E402  (standard library only at import time)

CHECKPOINT = "random-sd15.safetensors"
SEED = 1234
STOCK_ATTENTION = "sdp - scaled dot product"


def args(**switches) -> list:
    """Accordion args (README's API table) from keyword switches; unnamed ones stay at defaults."""
    from lib_speedkit.script_args import ARG_NAMES, DEFAULT_ARGS

    values = dict(zip(ARG_NAMES, DEFAULT_ARGS, strict=True))
    values.update(enabled=True, **switches)
    return [values[name] for name in ARG_NAMES]


FAST = {"cuda_graph": True}
LOSSLESS = {"cuda_graph": True, "channels_last": True, "lean_step": True}
CUTOFF = {"cutoff_mode": "fraction", "cutoff_value": 0.5}
TOME = {"tome_ratio": 0.5}

CONFIGURATIONS_512 = [
    ("extension absent", "extension-absent"),
    ("lean step", args(lean_step=True)),
    ("channels-last", args(channels_last=True)),
    ("cutoff fraction 0.5", args(**CUTOFF)),
    ("ToMe 0.5", args(**TOME)),
    ("CUDA graph", args(**FAST)),
    ("CUDA graph + lean step", args(**FAST, lean_step=True)),
    ("CUDA graph + channels-last", args(**FAST, channels_last=True)),
    ("CUDA graph + cutoff 0.5", args(**FAST, **CUTOFF)),
    ("CUDA graph + ToMe 0.5", args(**FAST, **TOME)),
    ("best lossless: graph + channels-last + lean", args(**LOSSLESS)),
    ("best overall: lossless + cutoff 0.5", args(**LOSSLESS, **CUTOFF)),
    ("lossless + cutoff 0.5 + ToMe 0.5", args(**LOSSLESS, **CUTOFF, **TOME)),
    ("lossless + compiled UNet", args(**LOSSLESS, compile_unet=True)),
    ("lossless + compiled + cutoff 0.5", args(**LOSSLESS, **CUTOFF, compile_unet=True)),
]
CONFIGURATIONS_1024 = [
    ("extension absent", "extension-absent"),
    ("CUDA graph", args(**FAST)),
    ("best lossless: graph + channels-last + lean", args(**LOSSLESS)),
    ("lossless + ToMe 0.5", args(**LOSSLESS, **TOME)),
    ("lossless + compiled UNet", args(**LOSSLESS, compile_unet=True)),
    ("channels-last", args(channels_last=True)),
    ("ToMe 0.5", args(**TOME)),
]


# ------------------------------------------------------------------------------------------ build


def rerandomise_(module, seed: int) -> None:
    """Every parameter random, fan-in scaled, on the module's device (ldm zero-initialises some
    layers; with those at zero attention cannot change the output)."""
    import math

    import torch

    first = next(module.parameters())
    generator = torch.Generator(device=first.device).manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator, device=param.device, dtype=param.dtype)
            if param.dim() >= 2:
                param.copy_(noise / math.sqrt(param[0].numel()))
            elif name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)


def write_checkpoint(root: Path, a1111: Path) -> Path:
    """configs/v1-inference.yaml at full size (UNet 320 ch, VAE, CLIP ViT-L/14 text), random, fp16."""
    import torch
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    config = OmegaConf.load(str(a1111 / "configs" / "v1-inference.yaml"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(SEED)
    model = harness.instantiate_with_random_text_encoder(config.model)
    model.to(device)
    rerandomise_(model.model.diffusion_model, SEED)
    params = {name for name, _ in model.named_parameters()}
    state = {
        name: (t.detach().half() if name in params and t.is_floating_point() else t.detach()).contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    del model
    path = root / CHECKPOINT
    save_file(state, str(path), metadata={"speedkit": "random SD1.5-size checkpoint (v1-inference.yaml), fp16"})
    return path


def prepare_build(root: Path, a1111: Path) -> None:
    """An offline HF cache under `root` (CLIP's tokenizer and config) and ldm importable: what
    building a checkpoint needs first."""
    # Before anything imports huggingface_hub: it reads these once, at import.
    os.environ["HF_HOME"] = str(root / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    root.mkdir(parents=True, exist_ok=True)
    harness.write_hf_cache(root / "hf")
    sys.path.insert(0, str(a1111 / "repositories" / "stable-diffusion-stability-ai"))


def build(root: Path, a1111: Path) -> Path:
    prepare_build(root, a1111)
    return write_checkpoint(root, a1111)


# ------------------------------------------------------------------------------------------ server


class Server:
    """launch.py --nowebui --api on 127.0.0.1 with this repository linked in as an extension."""

    def __init__(self, a1111: Path, work: Path, assets: Path, checkpoint: Path, port: int, extra: list[str]):
        self.a1111, self.assets, self.checkpoint, self.port, self.extra = a1111, assets, checkpoint, port, extra
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = work / "webui.log"
        self.data_dir = work / "data"
        self.process = None

    def command(self) -> list[str]:
        return [
            sys.executable, "launch.py", "--skip-prepare-environment", "--skip-install", "--nowebui", "--api",
            "--server-name", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--ckpt", str(self.checkpoint), "--no-download-sd-model", "--do-not-download-clip",
            "--disable-safe-unpickle", *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 400) -> float:
        extensions = self.data_dir / "extensions"
        extensions.mkdir(parents=True, exist_ok=True)
        link = extensions / harness.EXTENSION_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        drop = {"COMMANDLINE_ARGS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(HF_HOME=str(self.assets / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.a1111, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"WebUI exited with {self.process.returncode}:\n{self.tail()}")
            try:
                harness.http_json(self.url + "/sdapi/v1/sd-models", timeout=10)
                return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"WebUI not ready after {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


# ------------------------------------------------------------------------------------------ run


def matrix(server: Server, size: int, runs: int, configurations: list, overrides: dict) -> dict:
    body = {
        "preset": "Asuka test",
        "overrides": {"runs": runs, "warmup": 1, "width": size, "height": size, **overrides},
        "matrix": True,
        "entries": [{"label": label, "speedkit": speedkit} for label, speedkit in configurations],
    }
    started = time.perf_counter()
    try:
        result = harness.http_json(server.url + "/speedkit/v1/bench", body, timeout=3000)
    except urllib.error.HTTPError as error:
        return {"request": body, "error": f"HTTP {error.code}: {error.read().decode(errors='replace')[:2000]}"}
    return {"request": body, "result": result, "client_seconds": time.perf_counter() - started}


def _cell(summary: dict | None, key: str = "median", digits: int = 2) -> str:
    if not summary or summary.get(key) is None:
        return "n/a"
    return f"{summary[key]:.{digits}f}"


def _captures(row: dict) -> str:
    counts = [count for count in row.get("graph_captures") or [] if count is not None]
    return ", ".join(str(count) for count in counts) if counts else ""


def markdown(size: int, record: dict) -> str:
    if "error" in record:
        return f"### {size}²\n\nERROR: {record['error']}\n"
    rows = record["result"]["rows"]
    stock = rows[0]["sampler_its"]["median"]
    lines = [
        f"### {size}², batch 1, {record['request']['overrides']['runs']} timed runs per configuration",
        "",
        "| configuration | sampler it/s median (min–max) | × stock | end-to-end it/s | GPU util % | "
        "VRAM reserved peak MB | image vs stock | graph captures per timed run | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        its = row["sampler_its"] or {}
        diff = row.get("vs_baseline") or {}
        image = (
            "identical"
            if diff.get("identical")
            else f"max {diff.get('max_abs', 'n/a')}, PSNR {diff.get('psnr_db', float('nan')):.1f} dB"
        )
        vram = (row.get("vram") or {}).get("reserved_peak_mb")
        util = _cell(row.get("gpu_util"), digits=0)
        lines.append(
            f"| {row['label']} | {_cell(its)} ({_cell(its, 'min')}–{_cell(its, 'max')}) "
            f"| {its.get('median', 0) / stock:.2f} | {_cell(row['end_to_end_its'])} | {util} "
            f"| {vram if vram is not None else 'n/a'} | {image} | {_captures(row)} | {row.get('notes') or ''} |"
        )
    return "\n".join(lines) + "\n"


def run(ns) -> int:
    a1111, work, out = Path(ns.a1111).resolve(), Path(ns.work).resolve(), Path(ns.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    assets = work / "assets"
    checkpoint = assets / CHECKPOINT
    if not checkpoint.exists():
        built = subprocess.run([sys.executable, __file__, "build", str(assets), "--a1111", str(a1111)], text=True)
        if built.returncode:
            return built.returncode
    server = Server(a1111, work, assets, checkpoint, ns.port, ns.webui_arg or [])
    result = {"command": server.command(), "sizes": {}, "errors": []}
    try:
        result["startup_seconds"] = server.start()
        harness.http_json(server.url + "/sdapi/v1/options", {"cross_attention_optimization": STOCK_ATTENTION})
        overrides = json.loads(ns.overrides) if ns.overrides else {}
        for size in (int(s) for s in ns.sizes.split(",")):
            configurations = CONFIGURATIONS_512 if size <= 512 else CONFIGURATIONS_1024
            runs = ns.runs if size <= 512 else ns.runs_large
            record = matrix(server, size, runs, configurations, overrides)
            result["sizes"][str(size)] = record
            print(markdown(size, record), flush=True)
            (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
        result["status"] = harness.http_json(server.url + "/speedkit/v1/status")
    except Exception as error:  # noqa: BLE001 - keep what was measured, report the failure
        result["errors"].append(repr(error))
        print("ERROR", repr(error), server.tail(), flush=True)
    finally:
        server.stop()
        (out / "webui.log").write_text(server.log_path.read_text(errors="replace") if server.log_path.exists() else "")
        (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
        (out / "report.md").write_text("\n".join(markdown(int(s), r) for s, r in result["sizes"].items()))
    return 1 if result["errors"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    build_parser = commands.add_parser("build", help="only build the checkpoint and HF cache into ROOT")
    build_parser.add_argument("root")
    build_parser.add_argument("--a1111", required=True)
    parser.add_argument("--a1111", help="an A1111 v1.10.1 checkout with its repositories/")
    parser.add_argument("--work", default="/tmp/speedkit-asuka")
    parser.add_argument("--out", default="asuka-out")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--runs-large", type=int, default=3, help="timed runs per configuration above 512²")
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--overrides", help="JSON merged into the preset overrides, e.g. '{\"steps\": 8}'")
    parser.add_argument("--webui-arg", action="append", help="extra launch.py flag (repeatable)")
    ns = parser.parse_args()
    if ns.command == "build":
        build(Path(ns.root).resolve(), Path(ns.a1111).resolve())
        return 0
    if not ns.a1111:
        parser.error("--a1111 is required")
    return run(ns)


if __name__ == "__main__":
    sys.exit(main())
