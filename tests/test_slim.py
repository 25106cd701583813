"""Checkpoint slimming on tiny real state dicts of every supported architecture."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib_speedkit.errors import PlanError
from lib_speedkit.slim import SlimConfig, SlimError, open_checkpoint, plan_keys, safetensors_io, slim_checkpoint
from lib_speedkit.slim import keys as key_rules
from tiny_checkpoints import KINDS, schedule_buffers, tiny_state_dict, vae_state_dict

FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@pytest.fixture(scope="module")
def states():
    return {kind: tiny_state_dict(kind, ema=True) for kind in KINDS}


def write(path, state, metadata=None):
    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata=metadata)
    else:
        torch.save({"state_dict": state, "global_step": 1000, "epoch": 3}, path)
    return path


def expected_keys(state, kind, keep_vae=True):
    keys = {k for k in state if not k.startswith("model_ema.")}
    return keys if keep_vae else {k for k in keys if not k.startswith("first_stage_model.")}


@pytest.mark.parametrize("kind", KINDS)
def test_fp16_prune_gives_exactly_the_release_keys_in_fp16_with_the_schedule_in_fp32(tmp_path, states, kind):
    state = states[kind]
    source = write(tmp_path / "model.safetensors", state)
    report = slim_checkpoint(source, SlimConfig())
    out = load_file(report.output)  # the reference reader accepts the streamed file
    assert report.architecture == kind
    assert set(out) == expected_keys(state, kind)
    assert report.dropped == {"EMA copy (model_ema.*)": sorted(k for k in state if k.startswith("model_ema."))}
    for key, value in out.items():
        if key in schedule_buffers() or not state[key].is_floating_point():
            assert value.dtype == state[key].dtype, key
            assert torch.equal(value, state[key]), key
        else:
            assert value.dtype == torch.float16, key
            assert torch.equal(value, state[key].half()), key  # exactly fp16 rounding


@pytest.mark.parametrize("kind", ["SD1", "SDXL"])
def test_round_trip_values_equal_within_fp16_and_bf16_rounding(tmp_path, states, kind):
    source = write(tmp_path / "model.safetensors", states[kind])
    for dtype, torch_dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        out = load_file(slim_checkpoint(source, SlimConfig(dtype=dtype, suffix=f"-{dtype}")).output)
        eps = torch.finfo(torch_dtype).eps
        for key, value in out.items():
            original = states[kind][key]
            if value.dtype == torch_dtype:
                tolerance = eps * original.abs() + torch.finfo(torch_dtype).tiny
                assert ((value.float() - original).abs() <= tolerance).all(), key


def test_keep_dtype_without_prune_is_a_bit_exact_copy(tmp_path, states):
    source = write(tmp_path / "model.safetensors", states["SD2"])
    out = load_file(slim_checkpoint(source, SlimConfig(dtype="keep", prune=False)).output)
    assert out.keys() == states["SD2"].keys()
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in states["SD2"].items())


@pytest.mark.parametrize("kind", KINDS)
def test_drop_vae_removes_exactly_first_stage_model(tmp_path, states, kind):
    source = write(tmp_path / "model.safetensors", states[kind])
    report = slim_checkpoint(source, SlimConfig(keep_vae=False))
    assert set(load_file(report.output)) == expected_keys(states[kind], kind, keep_vae=False)
    assert report.dropped["VAE dropped"] == sorted(k for k in states[kind] if k.startswith("first_stage_model."))


@pytest.mark.parametrize("vae_layout", ["bare", "prefixed", "wrapped-ckpt"])
def test_baking_a_vae_replaces_first_stage_model_with_its_weights(tmp_path, states, vae_layout):
    vae = vae_state_dict() | {"loss.logvar": torch.zeros(()), "model_ema.decay": torch.tensor(0.99)}
    if vae_layout == "prefixed":
        vae = {("first_stage_model." + k if not k.startswith(("loss", "model_ema")) else k): v for k, v in vae.items()}
    vae_path = write(tmp_path / ("vae.pt" if vae_layout == "wrapped-ckpt" else "vae.safetensors"), vae)
    source = write(tmp_path / "model.safetensors", states["SD1"])
    report = slim_checkpoint(source, SlimConfig(vae=str(vae_path)))
    out = load_file(report.output)
    assert set(out) == expected_keys(states["SD1"], "SD1")
    for key, value in vae_state_dict().items():
        assert torch.equal(out["first_stage_model." + key], value.half()), key
    assert report.dropped["VAE replaced by the baked one"]
    assert report.added == []


def test_a_vae_of_another_shape_is_refused_before_writing(tmp_path, states):
    vae = vae_state_dict()
    vae["decoder.conv_out.weight"] = torch.zeros(3, 16, 3, 3)
    source = write(tmp_path / "model.safetensors", states["SD1"])
    with pytest.raises(
        SlimError, match=r"^vae: does not fit this SD1 checkpoint \(first_stage_model.decoder.conv_out.weight"
    ):
        slim_checkpoint(source, SlimConfig(vae=str(write(tmp_path / "vae.safetensors", vae))))
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "vae.safetensors"]


def test_a_vae_file_with_unet_keys_is_refused(tmp_path, states):
    source = write(tmp_path / "model.safetensors", states["SD1"])
    other = write(tmp_path / "other.safetensors", states["SD1"])
    with pytest.raises(SlimError, match=r"^vae: unexpected key '(model|cond_stage)_model\."):
        slim_checkpoint(source, SlimConfig(vae=str(other)))


def test_sd1_old_layout_text_encoder_duplicates_are_dropped_and_lone_old_keys_kept(tmp_path, states):
    state = dict(states["SD1"])
    new = "cond_stage_model.transformer.text_model."
    old = {k.replace("text_model.", ""): v.clone() for k, v in state.items() if k.startswith(new)}
    source = write(tmp_path / "model.safetensors", state | old)
    report = slim_checkpoint(source, SlimConfig())
    assert report.dropped["old-layout text-encoder duplicate"] == sorted(old)
    assert set(load_file(report.output)) == expected_keys(state, "SD1")
    only_old = {k: v for k, v in state.items() if not k.startswith(new)} | old
    lone = slim_checkpoint(write(tmp_path / "lone.safetensors", only_old), SlimConfig())
    assert set(old) <= set(load_file(lone.output))  # the WebUI renames them on load: they are needed


def test_sdxl_drops_cond_stage_model_keys_which_its_model_does_not_have(tmp_path, states):
    stray = {"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(32)}
    report = slim_checkpoint(write(tmp_path / "m.safetensors", states["SDXL"] | stray), SlimConfig())
    assert report.dropped["cond_stage_model.* (not part of an SDXL model)"] == list(stray)


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_the_webui_reads_to_recognise_the_model_survives(tmp_path, states, kind):
    state = states[kind]
    plan = plan_keys(open_checkpoint(write(tmp_path / "m.safetensors", state)), SlimConfig(keep_vae=False))
    kept = {entry.name for entry in plan.entries}
    present = [key for key in key_rules.DETECTION_KEYS if key in state]
    assert present and set(present) <= kept
    assert key_rules.detect_architecture({e.name: e.source.shape for e in plan.entries}).name == kind


def test_ckpt_input_is_read_with_the_safe_loader_and_training_state_reported(tmp_path, states):
    source = write(tmp_path / "model.ckpt", states["SD1"])
    report = slim_checkpoint(source, SlimConfig())
    assert set(load_file(report.output)) == expected_keys(states["SD1"], "SD1")
    assert report.skipped == [
        "global_step (training state outside state_dict)",
        "epoch (training state outside state_dict)",
    ]
    assert report.output == str(tmp_path / "model-slim.safetensors")


class Callback:  # stands for pytorch_lightning's ModelCheckpoint in real training checkpoints
    pass


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_that_need_more_than_tensors_are_refused_naming_the_option(tmp_path, states):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": states["SD1"], "callbacks": {"cb": Callback()}}, path)
    with pytest.raises(SlimError, match=r"^input: model.ckpt needs more than tensors.*allow_unsafe_pickle"):
        slim_checkpoint(path, SlimConfig())
    report = slim_checkpoint(path, SlimConfig(allow_unsafe_pickle=True))
    assert "callbacks (training state outside state_dict)" in report.skipped


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_code_running_pickle_is_refused_and_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as file:
        pickle.dump({"state_dict": {"x": Payload()}}, file)
    with pytest.raises(SlimError, match="allow_unsafe_pickle"):
        slim_checkpoint(path, SlimConfig())
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:4], "shorter than the 8-byte header length"),
        (lambda data: (10**9).to_bytes(8, "little") + data[8:], "header length 1000000000 does not fit"),
        (lambda data: data[:8] + b"[" + data[9:], "header is not JSON"),
        (lambda data: data[: len(data) // 2], "lies outside the file or has the wrong size"),
    ],
)
def test_a_corrupt_safetensors_file_is_a_clear_error_naming_the_input(tmp_path, states, damage, message):
    good = write(tmp_path / "good.safetensors", states["SD1"]).read_bytes()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(damage(good))
    with pytest.raises(SlimError, match=f"^input: .*bad.safetensors: not a valid safetensors file .*{message}"):
        slim_checkpoint(path, SlimConfig())
    assert not (tmp_path / "bad-slim.safetensors").exists()


def test_a_corrupt_ckpt_is_a_clear_error(tmp_path, states):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(write(tmp_path / "good.ckpt", states["SD1"]).read_bytes()[:5000])
    with pytest.raises(SlimError, match=r"^input: bad.ckpt is not a readable checkpoint"):
        slim_checkpoint(path, SlimConfig())


def test_files_that_are_not_sd_checkpoints_are_refused(tmp_path):
    vae = write(tmp_path / "vae.safetensors", vae_state_dict())
    with pytest.raises(SlimError, match=r"^input: no model.diffusion_model.\* keys"):
        slim_checkpoint(vae, SlimConfig())
    with pytest.raises(SlimError, match=r"^input: .*notes.txt has the extension '.txt'"):
        (tmp_path / "notes.txt").write_text("x")
        slim_checkpoint(tmp_path / "notes.txt", SlimConfig())


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_leaves_no_output_and_no_temporary_file(tmp_path, states, monkeypatch, interrupt):
    source = write(tmp_path / "model.safetensors", states["SD1"])
    real = safetensors_io.write_stream
    written = []

    def failing_stream(file, items, produce, metadata):
        def produce_then_fail(name):
            if len(written) == 100:
                raise interrupt("disk unplugged")
            written.append(name)
            return produce(name)

        real(file, items, produce_then_fail, metadata)

    monkeypatch.setattr("lib_speedkit.slim.convert.write_stream", failing_stream)
    with pytest.raises(interrupt):
        slim_checkpoint(source, SlimConfig())
    assert len(written) == 100
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_an_existing_output_is_never_overwritten_unless_allowed(tmp_path, states):
    source = write(tmp_path / "model.safetensors", states["SD1"])
    existing = tmp_path / "model-slim.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(SlimError, match=r"^output: .*model-slim.safetensors exists"):
        slim_checkpoint(source, SlimConfig())
    assert existing.read_bytes() == b"keep me"
    slim_checkpoint(source, SlimConfig(overwrite=True))
    assert set(load_file(existing)) == expected_keys(states["SD1"], "SD1")


def test_the_yaml_config_beside_the_checkpoint_is_copied_for_the_output(tmp_path, states):
    source = write(tmp_path / "model.safetensors", states["SD1"])
    (tmp_path / "model.yaml").write_text("model: {}\n")
    report = slim_checkpoint(source, SlimConfig())
    assert report.yaml == str(tmp_path / "model-slim.yaml")
    assert (tmp_path / "model-slim.yaml").read_text() == "model: {}\n"


def test_metadata_keeps_the_inputs_and_records_what_was_done(tmp_path, states):
    import json

    from safetensors import safe_open

    source = write(tmp_path / "model.safetensors", states["SDXL"], metadata={"modelspec.title": "tiny"})
    report = slim_checkpoint(source, SlimConfig(keep_vae=False))
    with safe_open(report.output, "pt") as file:
        metadata = file.metadata()
    record = json.loads(metadata["speedkit_slim"])
    assert metadata["modelspec.title"] == "tiny"
    assert record["architecture"] == "SDXL" and record["dtype"] == "fp16" and record["vae_kept"] is False
    assert record["dropped_keys"]["VAE dropped"] == len(report.dropped["VAE dropped"])


def test_the_output_is_deterministic(tmp_path, states):
    source = write(tmp_path / "model.safetensors", states["SD2"])
    first = (tmp_path / "model-a.safetensors", slim_checkpoint(source, SlimConfig(suffix="-a")))
    second = slim_checkpoint(source, SlimConfig(suffix="-b"))
    assert first[0].read_bytes() == open(second.output, "rb").read()


def test_fp16_overflow_is_reported(tmp_path, states):
    state = dict(states["SD1"])
    state["model.diffusion_model.out.2.bias"] = torch.full_like(state["model.diffusion_model.out.2.bias"], 1e6)
    report = slim_checkpoint(write(tmp_path / "m.safetensors", state), SlimConfig())
    assert report.overflow == ["model.diffusion_model.out.2.bias"]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"dtype": "fp8"}, "dtype"),
        ({"prune": "yes"}, "prune"),
        ({"suffix": "../x"}, "suffix"),
        ({"suffix": ""}, "suffix"),
        ({"vae": "v.pt", "keep_vae": False}, "keep_vae"),
        ({"vae": ""}, "vae"),
    ],
)
def test_bad_options_name_the_field(settings, field):
    with pytest.raises(PlanError) as caught:
        SlimConfig(**settings)
    assert caught.value.field == field


def test_lazy_reading_loads_one_tensor_at_a_time(tmp_path, states):
    path = write(tmp_path / "m.safetensors", states["SD1"])
    tensors, _ = safetensors_io.read_tensors(path)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert tensors[key].shape == tuple(states["SD1"][key].shape)
    assert torch.equal(tensors[key].load(), states["SD1"][key])


# --------------------------------------------------------------------------- CLI and read speed


def test_cli_slims_and_prints_the_report(tmp_path, states, capsys):
    from lib_speedkit import cli

    source = write(tmp_path / "model.ckpt", states["SD1"])
    assert cli.main(["slim", str(source), "--drop-vae"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"SD1: {source}\n  -> {tmp_path / 'model-slim.safetensors'}")
    assert f"dropped {sum(k.startswith('model_ema.') for k in states['SD1'])} (EMA copy (model_ema.*))" in out
    assert "tensors float32 -> float16" in out and "read speed, output:" in out
    kept = len([k for k in states["SD1"] if not k.startswith(("model_ema.", "first_stage_model."))])
    assert f"keys: {len(states['SD1'])} -> {kept}\n" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtype", "fp8"], "error: --dtype: dtype: 'fp8' is not allowed"),
        (["--suffix", "a/b"], "error: --suffix: suffix:"),
        (["--vae", "missing.pt"], "error: --vae: vae: missing.pt is not a file"),
        (["--vae", "v.pt", "--drop-vae"], "error: --drop-vae: keep_vae"),
    ],
)
def test_cli_errors_name_the_option_and_exit_2(tmp_path, states, capsys, argv, message):
    from lib_speedkit import cli

    source = write(tmp_path / "model.safetensors", states["SD1"])
    assert cli.main(["slim", str(source), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


def test_cli_refuses_an_unsafe_pickle_naming_the_flag(tmp_path, states, capsys):
    from lib_speedkit import cli

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": states["SD1"], "callbacks": {"cb": Callback()}}, path)
    assert cli.main(["slim", str(path), "--no-load-speed"]) == 2
    assert "error: PATH: input: model.ckpt needs more than tensors" in capsys.readouterr().err
    assert cli.main(["slim", str(path), "--no-load-speed", "--allow-unsafe-pickle", "--json"]) == 0
    assert '"architecture": "SD1"' in capsys.readouterr().out


def test_read_speed_is_measured_cold_and_warm_and_logged(tmp_path):
    from lib_speedkit.slim.loadspeed import LoadSpeedLog, measure_load_speed

    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3 * 2**20))
    record = measure_load_speed(path)
    assert record["bytes"] == 3 * 2**20 and record["warm"]["megabytes"] == pytest.approx(3 * 2**20 / 1e6)
    assert record["cold"] is not None or record["note"].startswith("warm only")
    log = LoadSpeedLog(tmp_path / "speed.json")
    log.record(record)
    assert log.lookup(path) == record
    path.write_bytes(b"changed")
    assert log.lookup(path) is None  # another file now: the old figure does not apply


def test_the_storage_hint_appears_only_for_a_slow_cold_read():
    from lib_speedkit.slim.loadspeed import ReadMeasurement, storage_hint

    assert "Storage is the bottleneck" in storage_hint(ReadMeasurement("cold", 40.0, 7000.0))
    assert storage_hint(ReadMeasurement("cold", 3.0, 7000.0)) is None
    assert storage_hint(ReadMeasurement("warm", 35.0, 7000.0)) is None
