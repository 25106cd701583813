"""install.py, run by the WebUI at launch: adds only the missing helpers, never touches torch."""

import runpy
import sys
import types
from pathlib import Path

import pytest

INSTALL_PY = Path(__file__).resolve().parents[1] / "install.py"


def run_install(monkeypatch, installed: set[str]) -> list[str]:
    pip_calls: list[str] = []
    launch = types.ModuleType("launch")
    launch.is_installed = lambda name: name in installed
    launch.run_pip = lambda command, desc=None, live=None: pip_calls.append(command)
    monkeypatch.setitem(sys.modules, "launch", launch)
    runpy.run_path(str(INSTALL_PY), run_name="__main__")
    return pip_calls


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        (set(), ["install psutil", "install nvidia-ml-py"]),
        ({"psutil"}, ["install nvidia-ml-py"]),
        ({"psutil", "pynvml"}, []),
    ],
)
def test_installs_only_what_is_missing(monkeypatch, capsys, installed, expected):
    assert run_install(monkeypatch, installed) == expected
    assert "xformers not installed (optional" in capsys.readouterr().out


def test_never_installs_torch_or_xformers(monkeypatch):
    calls = run_install(monkeypatch, set())
    assert not any("torch" in call or "xformers" in call for call in calls)


def test_reports_xformers_when_present(monkeypatch, capsys):
    run_install(monkeypatch, {"psutil", "pynvml", "xformers"})
    assert "xformers installed" in capsys.readouterr().out
