"""Command line for the Speedkit benchmark.

  python -m lib_speedkit bench --url http://127.0.0.1:7860 [--auth USER:PASS] [options]
      the preset on a running WebUI (POST /speedkit/v1/bench, which needs --api); prints the tab's table
  python -m lib_speedkit bench --standalone [--size sd15|tiny] [--steps N] [--runs N]
      no WebUI: an ldm UNet with random weights on this GPU (or CPU), each switch at UNet level
  python -m lib_speedkit slim PATH [--dtype fp16|bf16|keep] [--no-prune] [--vae PATH] [--drop-vae] ...
      a checkpoint -> a new pruned fp16 .safetensors beside it; prints the report (sizes, keys, read speed)

Arguments are checked first, so mistakes fail before anything runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from .bench import report
from .bench.presets import PRESETS
from .bench.request import bench_request
from .errors import PlanError, SpeedkitError

PRESET_OPTIONS = ("batch_size", "batch_count", "runs", "warmup", "steps", "width", "height")
STANDALONE_OPTIONS = ("size", "steps", "runs", "batch_size", "width", "json")
"""Options the standalone bench reads; any other bench option with --standalone is an error."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_speedkit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run the benchmark on a running WebUI")
    target = bench.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running WebUI, e.g. http://127.0.0.1:7860")
    target.add_argument("--standalone", action="store_true", help="no WebUI: a random-weight UNet on this machine")
    bench.add_argument("--size", choices=["auto", "sd15", "tiny"], default="auto", help="standalone UNet size")
    bench.add_argument("--preset", default="Asuka test", choices=list(PRESETS))
    for name in ("batch-size", "batch-count", "runs", "warmup", "steps", "width", "height"):
        bench.add_argument(f"--{name}", type=int, help=f"override the preset's {name.replace('-', ' ')}")
    bench.add_argument("--speedkit", help="the accordion's args as a JSON list, e.g. '[true, \"sdp\"]'")
    bench.add_argument("--matrix", action="store_true", help="compare every switch with the baseline")
    bench.add_argument("--label", default="", help="stored with the result")
    bench.add_argument("--json", action="store_true", help="print the result JSON instead of the table")
    bench.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the WebUI")
    bench.add_argument(
        "--auth", help="USER:PASS for a WebUI started with --api-auth or a login (default: $SPEEDKIT_AUTH)"
    )
    add_slim_parser(commands)
    return parser


def add_slim_parser(commands) -> None:
    from .slim.convert import SlimConfig

    defaults = SlimConfig()
    slim = commands.add_parser("slim", help="a checkpoint -> a pruned fp16 safetensors file beside it")
    slim.add_argument("path", help="a .safetensors, .ckpt or .pt checkpoint")
    slim.add_argument("--dtype", default=defaults.dtype, help="fp16 (default), bf16, or keep (prune only)")
    slim.add_argument("--no-prune", action="store_true", help="keep EMA copies and duplicate keys")
    slim.add_argument("--vae", help="bake this VAE file in (replaces the checkpoint's VAE)")
    slim.add_argument("--drop-vae", action="store_true", help="leave the VAE out (select one in the WebUI)")
    slim.add_argument(
        "--suffix", default=defaults.suffix, help=f"output name: NAME<suffix>.safetensors (default {defaults.suffix})"
    )
    slim.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    slim.add_argument("--allow-unsafe-pickle", action="store_true", help="unpickle .ckpt files that need code")
    slim.add_argument("--no-load-speed", action="store_true", help="skip the read-speed measurement")
    slim.add_argument("--json", action="store_true", help="print the report as JSON")


def request_body(args: argparse.Namespace) -> dict:
    """The POST body, validated as the WebUI will (bench/request.py); PlanError names the option."""
    overrides = {name: getattr(args, name) for name in PRESET_OPTIONS if getattr(args, name) is not None}
    body: dict = {"preset": args.preset, "overrides": overrides, "matrix": args.matrix, "label": args.label}
    if args.speedkit:
        try:
            body["speedkit"] = json.loads(args.speedkit)
        except json.JSONDecodeError:
            raise PlanError("--speedkit", args.speedkit, 'a JSON list such as [true, "sdp"]') from None
    try:
        bench_request(body)
    except PlanError as error:
        name = "--speedkit" if error.field == "speedkit" else error.field
        raise PlanError(name, error.value, error.allowed) from None
    return body


def post(url: str, body: dict, timeout: float, auth: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(
        url.rstrip("/") + "/speedkit/v1/bench", data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def ignored_standalone_options(args: argparse.Namespace) -> list[str]:
    """Bench options given with --standalone that it would not read (an error, not silence)."""
    defaults = build_parser().parse_args(["bench", "--standalone"])
    given = [
        name
        for name, value in vars(args).items()
        if name not in (*STANDALONE_OPTIONS, "command", "standalone", "url") and value != getattr(defaults, name)
    ]
    return ["--" + name.replace("_", "-") for name in given]


def standalone(args: argparse.Namespace) -> int:
    from .bench.standalone import StandaloneSettings, run_standalone, to_text

    ignored = ignored_standalone_options(args)
    if ignored:
        print(
            f"error: {', '.join(ignored)}: not used by the standalone bench (only --url runs presets)", file=sys.stderr
        )
        return 2
    settings = StandaloneSettings(
        size=args.size,
        steps=args.steps or 20,
        resolution=args.width or 512,
        batch=args.batch_size or 1,
        runs=args.runs or 3,
    )
    for name in ("steps", "batch", "runs"):
        if getattr(settings, name) < 1:
            print(f"error: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        result = run_standalone(settings, progress=lambda message: print(message, file=sys.stderr))
    except SpeedkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else to_text(result))
    return 0


SLIM_OPTIONS = {
    "dtype": "--dtype",
    "prune": "--no-prune",
    "vae": "--vae",
    "keep_vae": "--drop-vae",
    "suffix": "--suffix",
    "overwrite": "--overwrite",
    "input": "PATH",
    "output": "--suffix/--overwrite",
}


def slim(args: argparse.Namespace) -> int:
    """The slim subcommand; errors name the option and exit with 2."""
    from .errors import SpeedkitError
    from .slim import SlimConfig, slim_checkpoint
    from .slim.loadspeed import measure_load_speed
    from .slim.report import to_text
    from .slim.sources import UnsafePickleRefused

    try:
        config = SlimConfig(
            dtype=args.dtype,
            prune=not args.no_prune,
            vae=args.vae,
            keep_vae=not args.drop_vae,
            overwrite=args.overwrite,
            allow_unsafe_pickle=args.allow_unsafe_pickle,
            suffix=args.suffix,
        )
        report = slim_checkpoint(args.path, config)
    except SpeedkitError as error:
        field = getattr(error, "field", None) or str(error).split(":", 1)[0]
        unsafe = isinstance(error, UnsafePickleRefused)
        message = f"{error.refusal}; if you trust the file: --allow-unsafe-pickle" if unsafe else str(error)
        print(f"error: {SLIM_OPTIONS.get(field, field)}: {message}", file=sys.stderr)
        return 2
    result = report.as_dict()
    if not args.no_load_speed:
        result["checks"]["load_speed_source"] = measure_load_speed(report.source)
        result["checks"]["load_speed_output"] = measure_load_speed(report.output)
    print(json.dumps(result, indent=2) if args.json else to_text(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "slim":
        return slim(args)
    if args.standalone:
        return standalone(args)
    try:
        body = request_body(args)
    except PlanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        result = post(args.url, body, args.timeout, args.auth or os.environ.get("SPEEDKIT_AUTH"))
    except urllib.error.HTTPError as error:
        print(f"error: the WebUI answered {error.code}: {http_error_detail(error)}", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"error: cannot reach {args.url}: {error.reason} (is the WebUI running?)", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(report.matrix_to_text(result) if args.matrix else report.to_text(result))
    return 0


def http_error_detail(error: urllib.error.HTTPError) -> str:
    """The `detail` of a JSON error body; the reason (and a hint for 401/404) otherwise."""
    hints = {401: " (give --auth USER:PASS)", 404: " (is the WebUI running with --api?)"}
    try:
        detail = json.loads(error.read().decode() or "{}").get("detail")
    except (ValueError, AttributeError):
        detail = None
    return f"{detail or error.reason}{hints.get(error.code, '')}"
