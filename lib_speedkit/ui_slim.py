"""Gradio 3.41 layout of the "Slim a checkpoint" section of the Speedkit tab (no WebUI imports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from .slim.convert import TARGET_DTYPES


@dataclass
class SlimSectionHost:
    """What the section needs from the host: the lists and the Slim button's handler."""

    checkpoints: Callable[[], list[str]]
    vaes: Callable[[], list[str]]
    run: Callable  # (checkpoint, dtype, prune, vae, keep_vae, suffix, overwrite, unsafe, load test, images, speed)
    unsafe_default: bool = False  # the WebUI runs with --disable-safe-unpickle


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
                    value="fp16",
                    elem_id="speedkit_slim_dtype",
                )
                prune = gr.Checkbox(
                    label="Prune (drop EMA and duplicate keys)", value=True, elem_id="speedkit_slim_prune"
                )
            with gr.Row():
                vae = gr.Dropdown(label="Bake in VAE", choices=host.vaes(), value="None", elem_id="speedkit_slim_vae")
                keep_vae = gr.Checkbox(label="Keep the VAE", value=True, elem_id="speedkit_slim_keep_vae")
            with gr.Row():
                suffix = gr.Textbox(label="Output name suffix", value="-slim", elem_id="speedkit_slim_suffix")
                overwrite = gr.Checkbox(
                    label="Overwrite an existing output", value=False, elem_id="speedkit_slim_overwrite"
                )
            unsafe = gr.Checkbox(
                label="Allow unsafe pickles (.ckpt that run code when loaded)",
                value=host.unsafe_default,
                elem_id="speedkit_slim_unsafe",
            )
            with gr.Row():
                load_test = gr.Checkbox(label="Load test in the WebUI", value=True, elem_id="speedkit_slim_load_test")
                compare = gr.Checkbox(label="Compare images (same seed)", value=False, elem_id="speedkit_slim_compare")
                speed = gr.Checkbox(label="Measure read speed", value=True, elem_id="speedkit_slim_speed")
            run = gr.Button("Slim", variant="primary", elem_id="speedkit_slim_run")
        with gr.Column(scale=2):
            report_html = gr.HTML(elem_id="speedkit_slim_report")
            images = gr.Gallery(label="Original | slimmed", columns=2, elem_id="speedkit_slim_images")
            report_json = gr.JSON(label="Report (JSON)", elem_id="speedkit_slim_json")
    refresh.click(fn=_refresh(host.checkpoints), outputs=[checkpoint])
    refresh.click(fn=_refresh(host.vaes), outputs=[vae])
    inputs = [checkpoint, dtype, prune, vae, keep_vae, suffix, overwrite, unsafe, load_test, compare, speed]
    run.click(fn=host.run, inputs=inputs, outputs=[report_json, images, report_html])
