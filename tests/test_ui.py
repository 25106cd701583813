"""The accordion builds with gradio 3.41.2, in API order, and pasting infotext restores it."""

import json
import re

import gradio as gr

from lib_speedkit.plan import ATTENTION_CHOICES
from lib_speedkit.script_args import ARG_NAMES, ARGS_BY_NAME, DEFAULT_ARGS
from lib_speedkit.ui import build_controls, control_value, paste_fields, pasted_value, unavailable_note_html


class StandInPasteField:
    """Like the WebUI's PasteField: (component, function of the pasted parameters)."""

    def __init__(self, component, function):
        self.component, self.function = component, function


class StandInAccordion(gr.Checkbox):
    """Like the WebUI's InputAccordion: a checkbox that also opens an accordion."""

    def __init__(self, value, **kwargs):
        super().__init__(value, visible=False, **{k: v for k, v in kwargs.items() if k != "visible"})
        self.accordion = gr.Accordion(label=kwargs.get("label", ""), open=value)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc):
        return self.accordion.__exit__(*exc)


def build(unavailable=None, note=None):
    with gr.Blocks() as blocks:
        controls = build_controls(
            lambda item: f"script_txt2img_speedkit_{item}",
            list(ATTENTION_CHOICES),
            unavailable or {},
            StandInAccordion,
            note,
        )
    return blocks, controls


def test_controls_come_in_api_order_with_defaults():
    _, controls = build()
    inputs = controls.inputs()
    assert len(inputs) == len(ARG_NAMES)
    assert [c.elem_id for c in inputs] == [f"script_txt2img_speedkit_{name}" for name in ARG_NAMES]
    assert controls.enabled.value is False  # Settings' default mode is Off: closed
    assert controls.mode.value == "Lossless"  # opening the accordion is one click to the fastest lossless setting
    assert (controls.attention.value, controls.cuda_graph.value, controls.tome_ratio.value) == ("sdp", True, 0.0)


def test_a_default_mode_from_the_settings_opens_the_accordion_with_that_mode():
    with gr.Blocks():
        controls = build_controls(lambda item: f"x_{item}", list(ATTENTION_CHOICES), {}, StandInAccordion, None, "Fast")
    assert controls.enabled.value is True and controls.mode.value == "Fast"
    assert (controls.cutoff_mode.value, controls.cutoff_value.value) == ("fraction", 0.5)


def test_a_switch_that_cannot_run_here_is_left_out_of_a_mode_and_read_only():
    unavailable = {"sdp": "no SDPA", "cuda_graph": "the fast path needs torch >= 2.4"}
    with gr.Blocks():
        controls = build_controls(lambda item: f"x_{item}", list(ATTENTION_CHOICES), unavailable, StandInAccordion)
    assert controls.attention.value == "xformers" and controls.cuda_graph.value is False
    assert controls.cuda_graph.interactive is False


def test_unavailable_backends_are_listed_with_reasons_for_people_and_the_script():
    reasons = {"sdp-cudnn": "needs a CUDA GPU <cuDNN>", "xformers": "start with --xformers"}
    note = unavailable_note_html(reasons)
    assert "needs a CUDA GPU &lt;cuDNN&gt;" in note
    data = re.search(r'data-speedkit-unavailable="([^"]*)"', note).group(1)
    import html

    assert json.loads(html.unescape(data)) == reasons
    assert unavailable_note_html({}) == ""


def test_a_disabled_note_makes_the_backend_and_cutoff_read_only():
    _, controls = build(note="Forge detected")
    assert controls.attention.interactive is False
    assert controls.cutoff_mode.interactive is False
    _, normal = build()
    assert normal.attention.interactive is not False and normal.cutoff_mode.interactive is not False


def test_pasting_an_image_without_speedkit_keys_resets_every_control_to_its_default():
    params = {"Steps": "28", "Sampler": "Euler"}
    values = [pasted_value(name, params) for name in ARG_NAMES]
    assert values == [
        control_value(ARGS_BY_NAME[name], value) for name, value in zip(ARG_NAMES, DEFAULT_ARGS, strict=True)
    ]
    assert values[0] is False


def test_pasting_invalid_speedkit_values_warns_visibly_and_leaves_those_controls_at_default():
    _, controls = build()
    fields = paste_fields(controls, StandInPasteField)
    params = {"Speedkit attention": "quantum", "Speedkit ToMe": "0.5", "Speedkit cutoff": "fraction lots"}
    values = {field.component.elem_id.rsplit("speedkit_", 1)[1]: field.function(params) for field in fields}
    assert values["enabled"] is True and values["tome_ratio"] == 0.5
    assert values["attention"] == "keep" and values["cutoff_mode"] == "off"
    warning = values["paste_warning"]
    assert "could not be used" in warning and "Speedkit attention" in warning and "Speedkit cutoff" in warning
    by_id = {field.component.elem_id: field for field in fields}
    assert by_id["script_txt2img_speedkit_paste_warning"].function({"Speedkit ToMe": "0.5"}) == ""  # cleared
    assert "Same image" in by_id["script_txt2img_speedkit_mode_cost"].function({"Speedkit mode": "Lossless"})


def test_one_paste_parses_the_infotext_once(monkeypatch):
    import lib_speedkit.ui as ui_module

    calls = []
    real = ui_module.parse_infotext
    monkeypatch.setattr(ui_module, "parse_infotext", lambda params: calls.append(1) or real(params))
    _, controls = build()
    params = {"Speedkit ToMe": "0.5"}
    for field in paste_fields(controls, StandInPasteField):
        field.function(params)
    assert len(calls) == 1


def test_pasting_speedkit_infotext_restores_every_control():
    params = {
        "Speedkit attention": "sdp-math",
        "Speedkit cutoff": "sigma 1.5",
        "Speedkit ToMe": "0.5",
        "Speedkit ToMe downsample": "2",
        "Speedkit ToMe random": "True",
        "Speedkit ToMe seed": "77",
        "Speedkit channels-last": "True",
        "Speedkit CUDA graph": "True",
        "Speedkit lean step": "True",
        "Speedkit DeepCache": "3",
        "Speedkit DeepCache branch": "1",
        "Speedkit DeepCache start": "2",
        "Speedkit DeepCache end": "1",
        "Speedkit DeepCache hr": "1",
        "Speedkit compiled UNet": "True",
    }
    values = {name: pasted_value(name, params) for name in ARG_NAMES}
    assert values == {
        "enabled": True,
        "attention": "sdp-math",
        "cutoff_mode": "sigma",
        "cutoff_value": 1.5,
        "tome_ratio": 0.5,
        "tome_hr_ratio": 0.0,
        "tome_max_downsample": "2",
        "tome_sx": 2,
        "tome_sy": 2,
        "tome_random": True,
        "tome_seed": 77,
        "channels_last": True,
        "cuda_graph": True,
        "lean_step": True,
        "mode": "Custom",
        "deepcache_interval": 3,
        "deepcache_branch": 1,
        "deepcache_hr_interval": 1,
        "deepcache_start": 2,
        "deepcache_end": 1,
        "compile_unet": True,
    }


def tab_host(history_runs: int = 0, **changes):
    import pandas as pd

    from lib_speedkit.bench.presets import PRESETS
    from lib_speedkit.ui_tab import BenchTabHost

    plot = pd.DataFrame({"time": pd.to_datetime(["2026-12-02T08:00:00Z"] * history_runs, utc=True)})
    plot["sampler it/s"], plot["configuration"] = [30.0] * history_runs, ["Asuka test · sdp"] * history_runs
    fields = {
        "presets": list(PRESETS),
        "backend_choices": list(ATTENTION_CHOICES),
        "unavailable": {"sdp-cudnn": "needs CUDA"},
        "accordion_cls": StandInAccordion,
        "disabled_note": None,
        "run": lambda *args: None,
        "compare": lambda *args: None,
        "history_frame": lambda: pd.DataFrame({"timestamp": []}),
        "history_plot_frame": lambda: plot,
        "export": lambda kind: lambda: f"/tmp/x.{kind}",
        "gpus": ["NVIDIA GeForce RTX 4090"],
    }
    return BenchTabHost(**(fields | changes))


def tab_blocks(tab) -> dict:
    return {block.elem_id: block for block in tab.blocks.values() if getattr(block, "elem_id", None)}


def test_the_bench_tab_builds_with_every_control_wired():
    from lib_speedkit.ui_tab import THIS_GPU, build_bench_tab

    tab = build_bench_tab(tab_host())
    blocks = tab_blocks(tab)
    for needed in (
        "speedkit_bench_run",
        "speedkit_bench_compare",
        "speedkit_bench_result",
        "speedkit_bench_images",
        "speedkit_bench_json",
        "speedkit_bench_history",
        "speedkit_bench_plot",
        "speedkit_bench_export_csv",
        "speedkit_bench_attention",
        "speedkit_bench_mode",
        "speedkit_bench_tome_ratio",
    ):
        assert needed in blocks
    assert blocks["speedkit_bench_compare_with"].choices == [THIS_GPU, "NVIDIA GeForce RTX 4090"]
    assert blocks["speedkit_bench_json_section"].open is False  # the raw JSON is folded away
    clicks = [d for d in tab.config["dependencies"] if d.get("js") == "speedkit_bench_submit"]
    assert len(clicks) == 2
    assert all(len(d["inputs"]) == 11 + len(ARG_NAMES) and len(d["outputs"]) == 5 for d in clicks)
    html_output = blocks["speedkit_bench_result"]._id
    assert all(d["outputs"][-1] == html_output for d in clicks)  # last: the WebUI appends "Time taken" there


def test_the_history_plot_shows_only_once_there_are_runs():
    from lib_speedkit.ui_tab import build_bench_tab

    assert tab_blocks(build_bench_tab(tab_host(0)))["speedkit_bench_plot"].visible is False
    assert tab_blocks(build_bench_tab(tab_host(2)))["speedkit_bench_plot"].visible is True
