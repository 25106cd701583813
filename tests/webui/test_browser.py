"""Tier 2 in a real browser: the Speedkit accordion in txt2img, driven like a person would.

Needs Playwright (the Python package) and Debian's chromium; skipped with the reason otherwise.
Screenshots go to SPEEDKIT_TIER2_SCREENSHOTS (default <system temp>/speedkit-screenshots).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from harness import http_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GENERATION_TIMEOUT_MS = 180_000


def screenshot_dir() -> Path:
    value = os.environ.get("SPEEDKIT_TIER2_SCREENSHOTS", "").strip()
    path = Path(value) if value else Path(tempfile.gettempdir()) / "speedkit-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def page(webui):
    sync_api = pytest.importorskip("playwright.sync_api", reason="tier 2 browser test: pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("tier 2 browser test: Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(webui.url, wait_until="domcontentloaded")
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
        yield page
        browser.close()


def set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Tab")


def open_accordion(page, tab: str) -> None:
    """Open the accordion and wait until its hidden checkbox follows (Gradio's JS sets it a moment
    after the click; on a busy machine that moment is long)."""
    from playwright.sync_api import expect

    checkbox = page.locator(f"#script_{tab}_speedkit_enabled-checkbox input")
    # the WebUI's inputAccordion.js links the accordion to its checkbox once the UI has loaded
    page.locator(f"#script_{tab}_speedkit_enabled-visible-checkbox").wait_for(state="attached", timeout=60_000)
    if not checkbox.is_checked():
        page.locator(f"#script_{tab}_speedkit_enabled .label-wrap").click()
    expect(checkbox).to_be_checked(timeout=30_000)


def choose(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} ul.options li[data-value='{value}']").click()


def test_accordion_generates_with_the_chosen_switches_and_pastes_back(webui, page):
    from playwright.sync_api import expect

    page.locator("#txt2img_prompt textarea").fill("masterpiece, a cat sitting on a chair")
    set_number(page, "txt2img_steps", 4)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    open_accordion(page, "txt2img")

    page.locator("#script_txt2img_speedkit_attention input").click()
    unavailable = page.locator("#script_txt2img_speedkit_attention ul.options li[data-value='sdp-cudnn']")
    page.locator(
        "#script_txt2img_speedkit_attention ul.options li.speedkit_unavailable_option[data-value='sdp-cudnn']"
    ).wait_for(timeout=5_000)
    assert "CUDA" in (unavailable.get_attribute("title") or "")
    page.locator("#script_txt2img_speedkit_attention ul.options li[data-value='sdp-math']").click()
    set_number(page, "script_txt2img_speedkit_tome_ratio", 0.5)
    page.locator("#script_txt2img_speedkit_enabled").screenshot(path=str(screenshot_dir() / "accordion.png"))

    page.locator("#txt2img_generate").click()
    info = page.locator("#html_info_txt2img").filter(has_text="Speedkit attention: sdp-math").first
    info.wait_for(timeout=GENERATION_TIMEOUT_MS)
    text = info.inner_text()
    assert "Speedkit ToMe: 0.5" in text
    page.screenshot(path=str(screenshot_dir() / "txt2img.png"), full_page=True)
    applied = http_json(webui.url + "/speedkit/v1/status")["last_generation"]["applied"]
    assert applied == {"Speedkit attention": "sdp-math", "Speedkit ToMe": "0.5"}

    # Close the accordion, then paste the image's parameters back through the prompt box.
    page.locator("#script_txt2img_speedkit_enabled .label-wrap").click()
    expect(page.locator("#script_txt2img_speedkit_enabled-checkbox input")).not_to_be_checked(timeout=30_000)
    parameters = http_json(webui.url + "/sdapi/v1/png-info", {"image": _last_image(page)})["info"]
    page.locator("#txt2img_prompt textarea").fill(parameters)
    page.locator("#tab_txt2img #paste").click()
    page.wait_for_function(
        "() => document.querySelector('#script_txt2img_speedkit_enabled-checkbox input').checked", timeout=30_000
    )
    assert page.locator("#script_txt2img_speedkit_attention input").input_value() == "sdp-math"
    assert float(page.locator("#script_txt2img_speedkit_tome_ratio input[type=number]").input_value()) == 0.5


def _last_image(page) -> str:
    """The generated image (as the gallery shows it) as a base64 data URL."""
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    with urllib.request.urlopen(urllib.parse.urljoin(page.url, src), timeout=30) as response:
        return "data:image/png;base64," + base64.b64encode(response.read()).decode()


def test_the_speedkit_tab_runs_a_benchmark_and_shows_the_table(webui, page):
    page.locator("#tabs > .tab-nav button", has_text="Speedkit").click()
    page.locator("#speedkit_bench_run").wait_for()
    for elem_id, value in (("speedkit_bench_steps", 4), ("speedkit_bench_width", 64), ("speedkit_bench_height", 64)):
        set_number(page, elem_id, value)
    set_number(page, "speedkit_bench_runs", 2)
    page.locator("#speedkit_bench_label textarea").fill("browser")
    page.locator("#speedkit_bench_run").click()
    result = page.locator("#speedkit_bench_result").filter(has_text="Sampler it/s").first
    result.wait_for(timeout=GENERATION_TIMEOUT_MS)
    text = result.inner_text()
    assert "GPU utilisation while sampling" in text and "n/a" in text  # no NVIDIA GPU here
    assert "Time taken" in text  # appended by the WebUI's own wrapper
    page.screenshot(path=str(screenshot_dir() / "speedkit-tab.png"), full_page=True)
    history = page.locator("#speedkit_bench_history")
    assert "browser" in history.inner_text()
