"""Checkpoint slimming in the WebUI: the tab section's handler, `POST /speedkit/v1/slim`, the load test.

The conversion itself is `lib_speedkit.slim` (no WebUI). Here: the model and VAE lists, the
`--disable-safe-unpickle` flag, the load test through the WebUI's own loader
(`sd_models.reload_model_weights`, which reads the file, guesses or finds its config and builds the
model; the previous checkpoint is loaded back afterwards) and the same-seed image comparison. Heavy
work holds the queue lock (the tab through `wrap_gradio_gpu_call`, the route through `queue_lock`).
"""

from __future__ import annotations

import html
import os
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from modules import call_queue, paths_internal, processing, safe, sd_models, sd_vae, shared

from ..bench import imagediff
from ..errors import SpeedkitError
from ..slim import SlimConfig, slim_checkpoint
from ..slim.loadspeed import LoadSpeedLog, measure_load_speed
from ..slim.report import to_html
from ..slim.request import NO_VAE, SlimChecks, SlimRequest, request_from_body, tab_allows_unsafe_pickles
from ..slim.safetensors_io import SlimError, read_header
from ..slim.sources import UnsafePickleRefused
from .model_files import resolve_checkpoint, resolve_vae

CHECK_PROMPT = "a photograph of an astronaut riding a horse"
CHECK_SEED = 1234
UNSAFE_IN_THE_WEBUI = (
    "if you trust the file: the Speedkit tab's 'Allow unsafe pickles' (with its confirmation), or start the "
    "WebUI with --disable-safe-unpickle"
)
UNSAFE_FROM_NETWORK = (
    "this WebUI is reachable from the network (--listen, --share, --server-name): unsafe pickles only with "
    "--enable-insecure-extension-access, as for installing extensions, or --disable-safe-unpickle"
)


def load_speed_log() -> LoadSpeedLog:
    return LoadSpeedLog(Path(paths_internal.data_path) / "speedkit" / "load-speed.json")


def checkpoint_choices() -> list[str]:
    return list(sd_models.checkpoints_list)


def vae_choices() -> list[str]:
    sd_vae.refresh_vae_list()
    return [NO_VAE, *sd_vae.vae_dict]


def webui_allows_unsafe_pickles() -> bool:
    """The WebUI's own flag: it unpickles checkpoints without checks itself then."""
    return bool(getattr(shared.cmd_opts, "disable_safe_unpickle", False))


def tab_may_allow_unsafe_pickles() -> str | None:
    """Why the tab may not offer unsafe unpickling (None: it may, after the confirmation)."""
    if getattr(shared.cmd_opts, "disable_extension_access", False):
        return UNSAFE_FROM_NETWORK
    return None


# --------------------------------------------------------------------------- checks


def generate_check_image(request: SlimRequest):
    """One image with fixed prompt and seed on the loaded model (not saved)."""
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        prompt=CHECK_PROMPT,
        seed=CHECK_SEED,
        steps=request.checks.steps,
        width=request.checks.size,
        height=request.checks.size,
        sampler_name="Euler",
        cfg_scale=7.0,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    with closing(p):
        return processing.process_images(p).images[0]


def _load(filename: str):
    info = sd_models.CheckpointInfo(filename)
    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=info)
    loaded = getattr(shared.sd_model, "sd_checkpoint_info", None)
    if loaded is None or os.path.realpath(loaded.filename) != os.path.realpath(filename):
        raise SpeedkitError(f"load test: the WebUI did not load {filename}")
    return shared.sd_model


def _missing_weights(model, output_keys: set[str]) -> list[str]:
    """Model weights the slimmed file does not provide (the WebUI loads with strict=False)."""
    renamed = {
        sd_models.transform_checkpoint_dict_key(k, sd_models.checkpoint_dict_replacements_sd1) for k in output_keys
    }
    # sd_hijack wraps the text encoders and their token embeddings in modules that hold the original
    # as `.wrapped`: the file's key has no such segment.
    expected = [k.replace(".wrapped.", ".") for k in model.state_dict() if not k.startswith("model_ema.")]
    return [k for k in expected if k not in renamed and k not in output_keys]


def load_checks(request: SlimRequest, source: str, result: dict, output_keys: set[str]) -> tuple[dict, list]:
    """Load test (and same-seed images) through the WebUI's loader; the previous model comes back."""
    checks, images = {}, []
    previous = getattr(shared.sd_model, "sd_checkpoint_info", None)
    try:
        if request.checks.compare_images:
            _load(source)
            images.append(generate_check_image(request))
        model = _load(result["output"])
        missing = _missing_weights(model, output_keys)
        vae_dropped = not request.config.keep_vae
        missing_real = [k for k in missing if not (vae_dropped and k.startswith("first_stage_model."))]
        checks["load_test"] = {
            "ok": not missing_real,
            "config": getattr(model, "used_config", None),
            "model_type": str(getattr(model, "model_type", "")),
            "missing_weights": missing_real[:20],
            "detail": f"loaded by the WebUI as {getattr(model, 'model_type', '?')}"
            + (
                f"; {len(missing_real)} model weights missing from the file"
                if missing_real
                else "; every weight present"
            )
            + ("; the VAE is not in the file: select one in Settings → SD VAE" if vae_dropped else ""),
        }
        if request.checks.compare_images:
            images.append(generate_check_image(request))
            checks["image_difference"] = imagediff.compare(images[0], images[1]).as_dict()
    finally:
        if previous is not None:
            with sd_models.SkipWritingToConfig():
                sd_models.reload_model_weights(info=previous)
    return checks, images


# --------------------------------------------------------------------------- running


def run_request(request: SlimRequest, allow_unsafe_pickle: bool = False) -> tuple[dict, list]:
    """Slim, then the checks. Call with the queue lock held. Raises SpeedkitError for bad input.
    Unsafe pickles are read with the WebUI's --disable-safe-unpickle, or when the caller (the tab,
    after its confirmation) says so: never because a request body asked."""
    source, output_folder = resolve_checkpoint(request.checkpoint)
    vae = resolve_vae(request.vae)
    allow = allow_unsafe_pickle or webui_allows_unsafe_pickles()
    config = replace(request.config, vae=str(vae) if vae else None, allow_unsafe_pickle=allow)
    shared.state.textinfo = "Speedkit: slimming the checkpoint"
    try:
        report = slim_checkpoint(source, config, output_folder, torch_load=safe.unsafe_torch_load)
    except UnsafePickleRefused as error:
        raise SlimError(f"{error.refusal}; {UNSAFE_IN_THE_WEBUI}") from None
    result = report.as_dict()
    output_keys = set(read_header(Path(report.output))[0])
    sd_models.list_models()  # the new file appears in the checkpoint list
    images = []
    checks = request.checks
    if checks.load_speed:
        for label, path in (("source", report.source), ("output", report.output)):
            record = measure_load_speed(path)
            load_speed_log().record(record)
            result["checks"][f"load_speed_{label}"] = record
    if checks.load_test or checks.compare_images:
        load_results, images = load_checks(request, source, result, output_keys)
        result["checks"] |= load_results
    return result, images


def slim_endpoint(body: dict):
    from fastapi import HTTPException

    try:
        request = request_from_body(body)
        with call_queue.queue_lock:
            shared.state.begin(job="speedkit-slim")
            try:
                result, _images = run_request(request)
            finally:
                shared.state.end()
    except SpeedkitError as error:
        raise HTTPException(status_code=422, detail=f"speedkit slim: {error}") from None
    return result


def tab_handler(checkpoint, dtype, prune, vae, keep_vae, suffix, overwrite, unsafe, unsafe_confirmed, *checks):
    """The tab's Slim button: (report JSON, images, report HTML); errors as a message, not a traceback."""
    load_test, compare, speed = checks
    try:
        allow_unsafe = tab_allows_unsafe_pickles(bool(unsafe), bool(unsafe_confirmed), tab_may_allow_unsafe_pickles())
        request = SlimRequest(
            checkpoint=checkpoint or "",
            vae=vae or NO_VAE,
            config=SlimConfig(
                dtype=dtype, prune=bool(prune), keep_vae=bool(keep_vae), overwrite=bool(overwrite), suffix=suffix or ""
            ),
            checks=SlimChecks(load_test=bool(load_test), compare_images=bool(compare), load_speed=bool(speed)),
        )
        result, images = run_request(request, allow_unsafe_pickle=allow_unsafe)
    except SpeedkitError as error:
        return None, [], f"<p class='speedkit_error'>Slimming refused: {html.escape(str(error))}</p>"
    return result, images, to_html(result)


def environment_load_speed(filename: str | None) -> dict | None:
    """For the bench's environment record: the last read-speed measurement of the loaded checkpoint."""
    if not filename or not os.path.exists(filename):
        return None
    record = load_speed_log().lookup(filename)
    if record is None:
        return {"measured": False, "note": "not measured: Speedkit tab → Slim a checkpoint measures it"}
    cold, warm = record.get("cold") or {}, record.get("warm") or {}
    return {
        "measured": True,
        "cold_mb_s": cold.get("mb_per_s"),
        "warm_mb_s": warm.get("mb_per_s"),
        "hint": record.get("hint"),
        "note": record.get("note"),
    }
