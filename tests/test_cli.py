"""The bench CLI checks its arguments before contacting the WebUI."""

import pytest

from lib_speedkit import cli


def run(capsys, *argv):
    code = cli.main(["bench", "--url", "http://127.0.0.1:9", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "steps: 0 is not allowed"),
        (["--width", "100"], "width: 100"),
        (["--speedkit", '[true, "quantum"]'], "attention (args[1])"),
        (["--speedkit", "not json"], "--speedkit"),
        (["--speedkit", '{"a": 1}'], "--speedkit"),
    ],
)
def test_bad_arguments_fail_with_the_field_named_and_exit_2(capsys, argv, message):
    code, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_an_unknown_preset_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["bench", "--url", "http://x", "--preset", "Nope"])
    assert caught.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_an_unreachable_webui_is_a_clear_error(capsys):
    code, err = run(capsys, "--steps", "4")
    assert code == 1 and "cannot reach http://127.0.0.1:9" in err


def test_the_request_body_carries_preset_overrides_and_switches():
    args = cli.build_parser().parse_args(
        ["bench", "--url", "u", "--batch-size", "4", "--runs", "5", "--speedkit", '[true, "sdp"]', "--matrix"]
    )
    assert cli.request_body(args) == {
        "preset": "Asuka test",
        "overrides": {"batch_size": 4, "runs": 5},
        "matrix": True,
        "label": "",
        "speedkit": [True, "sdp"],
    }


def test_standalone_bench_runs_every_switch_on_a_tiny_unet(capsys):
    code = cli.main(["bench", "--standalone", "--size", "tiny", "--steps", "2", "--runs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("CPU: tiny UNet") and "TFLOP per guided step" in out
    for label in ("original attention (v1)", "sdp-flash", "sdp-math", "sdp + ToMe 0.5", "sdp + cutoff 0.75"):
        assert label in out


def test_standalone_cutoff_really_skips_the_uncond_pass():
    from lib_speedkit.bench.standalone import StandaloneSettings, run_standalone

    result = run_standalone(StandaloneSettings(size="tiny", steps=4, runs=1), progress=lambda message: None)
    rows = {row["label"]: row for row in result["rows"]}
    assert rows["sdp + cutoff 0.75"]["unet_calls"] == {"with_uncond": 3, "without_uncond": 1}
    assert rows["sdp"]["unet_calls"] == {"with_uncond": 4, "without_uncond": 0}
