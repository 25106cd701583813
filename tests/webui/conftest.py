"""Tier 2: tests against a real A1111 WebUI, opt-in through SPEEDKIT_A1111_DIR (see tests/README.md).

Every test in this folder gets the `webui` marker; `pytest -m "not webui"` leaves them out. Without
SPEEDKIT_A1111_DIR they are skipped, and nothing here needs more than the standard library.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import WebUIServer, a1111_dir
from helpers import pixels, status, txt2img

HERE = Path(__file__).resolve().parent
# A test-only extension (makes sampling fail on demand), linked in beside Speedkit when present.
FAULT_EXTENSION = HERE / "fault_extension"
SKIP_REASON = "tier 2 skipped: set SPEEDKIT_A1111_DIR to an A1111 v1.10.1 checkout (see tests/README.md)"

_servers: list[WebUIServer] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.webui)


@pytest.fixture(scope="session")
def webui():
    """A started WebUI (full Gradio UI plus --api) with this repository linked in as an extension."""
    if a1111_dir() is None:
        pytest.skip(SKIP_REASON)
    extra = {"speedkit-test-faults": FAULT_EXTENSION} if FAULT_EXTENSION.is_dir() else {}
    with WebUIServer(extra_extensions=extra) as server:
        _servers.append(server)
        try:
            yield server
        finally:
            _servers.remove(server)


@pytest.fixture(scope="module")
def pristine(webui) -> dict:
    """The WebUI's state before the module's Speedkit generations, and a reference image without Speedkit."""
    return {"status": status(webui), "pixels": pixels(txt2img(webui))}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Attach the end of the WebUI log to each failing tier-2 test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _servers and HERE in Path(item.path).resolve().parents:
        server = _servers[-1]
        title = f"WebUI log, last 50 lines ({server.log_path}; SPEEDKIT_TIER2_KEEP=1 keeps it)"
        report.sections.append((title, server.log_tail(50)))
