"""Nothing platform-specific at import time: the extension must load on Windows, where the POSIX
`resource` module does not exist (A1111 users mostly run Windows; CI runs Linux)."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import pytest

import lib_speedkit

HOST_PACKAGES = ("lib_speedkit.webui",)  # imports the WebUI (`modules.*`): tier 2 loads it


def library_modules() -> list[str]:
    names = [info.name for info in pkgutil.walk_packages(lib_speedkit.__path__, "lib_speedkit.")]
    return [name for name in names if not name.startswith(HOST_PACKAGES) and not name.endswith("__main__")]


@pytest.fixture
def without_resource(monkeypatch):
    """Python as on Windows: `import resource` raises ImportError; library modules re-imported."""
    monkeypatch.setitem(sys.modules, "resource", None)
    for name in [name for name in sys.modules if name.startswith("lib_speedkit")]:
        monkeypatch.delitem(sys.modules, name)
    yield


def test_every_library_module_imports_without_the_posix_resource_module(without_resource):
    for name in library_modules():
        importlib.import_module(name)
    assert "lib_speedkit.slim.convert" in sys.modules


def test_peak_memory_is_unknown_rather_than_a_crash_without_resource(without_resource, monkeypatch):
    convert = importlib.import_module("lib_speedkit.slim.convert")
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert convert.peak_rss_mb() is None


def test_peak_memory_is_measured_where_resource_exists():
    from lib_speedkit.slim.convert import peak_rss_mb

    assert peak_rss_mb() > 10
