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
