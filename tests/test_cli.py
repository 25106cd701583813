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
        assert label in out and f"{label:<26} unavailable" not in out  # measured, not merely listed
    assert "sdp + CUDA graph           unavailable: CUDA graphs need a CUDA device" in out


@pytest.mark.parametrize("option", [["--height", "768"], ["--matrix"], ["--speedkit", "[true]"], ["--label", "x"]])
def test_standalone_refuses_options_it_would_ignore(capsys, option):
    code = cli.main(["bench", "--standalone", *option])
    assert code == 2 and option[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("missing", "named"), [("ldm", "stable-diffusion-sdkit"), ("PIL", "pillow"), ("numpy", "numpy")]
)
def test_standalone_names_the_package_that_is_missing_without_a_traceback(capsys, monkeypatch, missing, named):
    import sys

    for name in [n for n in sys.modules if n == missing or n.startswith(missing + ".") or n.startswith("ldm")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ModuleNotFoundError
    code = cli.main(["bench", "--standalone", "--size", "tiny", "--steps", "1", "--runs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the standalone bench needs") and named in err


def test_credentials_go_into_a_basic_auth_header(monkeypatch):
    seen = {}

    class Answer:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return b"{}"

    def urlopen(request, timeout):
        seen.update(request.headers)
        return Answer()

    monkeypatch.setattr(cli.urllib.request, "urlopen", urlopen)
    cli.post("http://x", {}, 1, "user:pa55")
    assert seen["Authorization"] == "Basic dXNlcjpwYTU1"


def test_a_non_json_error_page_is_reported_without_a_traceback():
    import io
    import urllib.error

    error = urllib.error.HTTPError("http://x", 500, "Internal Server Error", {}, io.BytesIO(b"<html>oops</html>"))
    assert cli.http_error_detail(error) == "Internal Server Error"
    error = urllib.error.HTTPError("http://x", 401, "Unauthorized", {}, io.BytesIO(b'{"detail": "Not authenticated"}'))
    assert cli.http_error_detail(error) == "Not authenticated (give --auth USER:PASS)"


def test_standalone_cutoff_really_skips_the_uncond_pass():
    from lib_speedkit.bench.standalone import StandaloneSettings, run_standalone

    result = run_standalone(StandaloneSettings(size="tiny", steps=4, runs=1), progress=lambda message: None)
    rows = {row["label"]: row for row in result["rows"]}
    assert rows["sdp + cutoff 0.75"]["unet_calls"] == {"with_uncond": 3, "without_uncond": 1}
    assert rows["sdp"]["unet_calls"] == {"with_uncond": 4, "without_uncond": 0}
