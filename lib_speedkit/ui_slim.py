"""Gradio 3.41 layout of the "Slim a checkpoint" section of the Speedkit tab (no WebUI imports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from .slim.convert import TARGET_DTYPES, SlimConfig
from .slim.request import NO_VAE, SlimChecks

UNSAFE_CONFIRMATION = "I trust this file: I know an unsafe pickle can run any code on this computer"


@dataclass
class SlimSectionHost:
    """What the section needs from the host: the lists and the Slim button's handler."""

    checkpoints: Callable[[], list[str]]
    vaes: Callable[[], list[str]]
    # (checkpoint, dtype, prune, vae, keep_vae, suffix, overwrite, unsafe, unsafe confirmed, load test, images, speed)
    run: Callable
    unsafe_blocked: str | None = None  # why this WebUI cannot offer unsafe unpickling from the tab
    webui_unsafe: bool = False  # the WebUI runs with --disable-safe-unpickle (reads pickles unchecked anyway)


def _unsafe_controls(host: SlimSectionHost):
    """The unsafe-pickle box and its confirmation (shown once the box is ticked)."""
    if host.webui_unsafe:
        info = "the WebUI runs with --disable-safe-unpickle: pickles are read without checks in any case"
    else:
        info = host.unsafe_blocked or "only for a file you trust; asks for a confirmation"
    unsafe = gr.Checkbox(
        label="Allow unsafe pickles (.ckpt that run code when loaded)",
        value=False,
        interactive=host.unsafe_blocked is None,
        info=info,
        elem_id="speedkit_slim_unsafe",
    )
    confirmed = gr.Checkbox(label=UNSAFE_CONFIRMATION, value=False, visible=False, elem_id="speedkit_slim_unsafe_ok")
    unsafe.change(fn=lambda ticked: gr.update(visible=bool(ticked), value=False), inputs=[unsafe], outputs=[confirmed])
    return unsafe, confirmed


DEFAULTS = SlimConfig()
CHECKS = SlimChecks()


def _refresh(choices: Callable[[], list[str]]):
    return lambda: gr.update(choices=choices())


def build_slim_section(host: SlimSectionHost) -> None:
    """The controls, the Slim button and the report; call inside the tab's Blocks."""
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                checkpoint = gr.Dropdown(
                    label="Checkpoint", choices=host.checkpoints(), elem_id="speedkit_slim_checkpoint"
                )
                refresh = gr.Button("Refresh lists", elem_id="speedkit_slim_refresh")
            with gr.Row():
                dtype = gr.Radio(
                    label="Floating-point weights",
                    choices=list(TARGET_DTYPES),
                    value=DEFAULTS.dtype,
                    elem_id="speedkit_slim_dtype",
                )
                prune = gr.Checkbox(
                    label="Prune (drop EMA and duplicate keys)", value=DEFAULTS.prune, elem_id="speedkit_slim_prune"
                )
            with gr.Row():
                vae = gr.Dropdown(label="Bake in VAE", choices=host.vaes(), value=NO_VAE, elem_id="speedkit_slim_vae")
                keep_vae = gr.Checkbox(label="Keep the VAE", value=DEFAULTS.keep_vae, elem_id="speedkit_slim_keep_vae")
            with gr.Row():
                suffix = gr.Textbox(label="Output name suffix", value=DEFAULTS.suffix, elem_id="speedkit_slim_suffix")
                overwrite = gr.Checkbox(
                    label="Overwrite an existing output", value=DEFAULTS.overwrite, elem_id="speedkit_slim_overwrite"
                )
            unsafe, unsafe_confirmed = _unsafe_controls(host)
            with gr.Row():
                load_test = gr.Checkbox(
                    label="Load test in the WebUI", value=CHECKS.load_test, elem_id="speedkit_slim_load_test"
                )
                compare = gr.Checkbox(
                    label="Compare images (same seed)", value=CHECKS.compare_images, elem_id="speedkit_slim_compare"
                )
                speed = gr.Checkbox(label="Measure read speed", value=CHECKS.load_speed, elem_id="speedkit_slim_speed")
            run = gr.Button("Slim", variant="primary", elem_id="speedkit_slim_run")
        with gr.Column(scale=2):
            report_html = gr.HTML(elem_id="speedkit_slim_report")
            images = gr.Gallery(label="Original | slimmed", columns=2, elem_id="speedkit_slim_images")
            report_json = gr.JSON(label="Report (JSON)", elem_id="speedkit_slim_json")
    refresh.click(fn=_refresh(host.checkpoints), outputs=[checkpoint])
    refresh.click(fn=_refresh(host.vaes), outputs=[vae])
    options = [checkpoint, dtype, prune, vae, keep_vae, suffix, overwrite, unsafe, unsafe_confirmed]
    inputs = [*options, load_test, compare, speed]
    run.click(fn=host.run, inputs=inputs, outputs=[report_json, images, report_html])
