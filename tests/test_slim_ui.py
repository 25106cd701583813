"""The "Slim a checkpoint" section builds inside the Speedkit tab with its button wired (gradio 3.41)."""

from __future__ import annotations

from test_ui import tab_host

from lib_speedkit.ui_slim import SlimSectionHost
from lib_speedkit.ui_tab import build_bench_tab


class StandInAccordion:
    def __init__(self, value, label, elem_id):
        import gradio as gr

        self.box = gr.Checkbox(value=value, label=label, elem_id=elem_id)

    def __enter__(self):
        return self.box

    def __exit__(self, *exc):
        return False


def build(slim):
    tab = build_bench_tab(tab_host(slim=slim))
    return tab, {block.elem_id: block for block in tab.blocks.values() if getattr(block, "elem_id", None)}


def test_the_slim_section_lists_models_and_vaes_and_wires_the_button():
    slim = SlimSectionHost(
        checkpoints=lambda: ["tiny.safetensors [039410f7bb]"],
        vaes=lambda: ["None", "vae-ft-mse.safetensors"],
        run=lambda *args: (None, [], ""),
    )
    tab, blocks = build(slim)
    assert blocks["speedkit_slim"].label == "Slim a checkpoint"
    assert blocks["speedkit_slim_checkpoint"].choices == ["tiny.safetensors [039410f7bb]"]
    assert blocks["speedkit_slim_vae"].choices == ["None", "vae-ft-mse.safetensors"]
    assert [value for value, _label in blocks["speedkit_slim_dtype"].choices] == ["fp16", "bf16", "keep"]
    assert blocks["speedkit_slim_unsafe"].value is False and blocks["speedkit_slim_unsafe"].interactive is not False
    assert blocks["speedkit_slim_unsafe_ok"].visible is False  # the confirmation shows once the box is ticked
    run_id = blocks["speedkit_slim_run"]._id
    (click,) = [d for d in tab.config["dependencies"] if d["targets"] == [run_id]]
    assert len(click["inputs"]) == 12 and len(click["outputs"]) == 3


def test_a_webui_reachable_from_the_network_offers_no_unsafe_unpickling_in_the_tab():
    slim = SlimSectionHost(
        checkpoints=lambda: [],
        vaes=lambda: ["None"],
        run=lambda *args: (None, [], ""),
        unsafe_blocked="this WebUI is reachable from the network",
    )
    _tab, blocks = build(slim)
    assert blocks["speedkit_slim_unsafe"].interactive is False
    assert "reachable from the network" in blocks["speedkit_slim_unsafe"].info


def test_without_a_slim_host_the_tab_has_no_slim_section():
    _tab, blocks = build(None)
    assert "speedkit_slim" not in blocks
