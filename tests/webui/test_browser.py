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
        page.locator(f"#script_{tab}_speedkit_enabled > .label-wrap").click()
    expect(checkbox).to_be_checked(timeout=30_000)


def choose(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} ul.options li[data-value='{value}']").click()


def pick_mode(page, tab: str, mode: str) -> None:
    page.locator(f"#script_{tab}_speedkit_mode input[value='{mode}']").check()


def open_advanced(page, tab: str) -> None:
    advanced = page.locator(f"#script_{tab}_speedkit_advanced")
    if not advanced.locator(".label-wrap.open").count():
        advanced.locator(".label-wrap").click()


def generate_and_read_infotext(page, expected: str) -> str:
    page.locator("#txt2img_generate").click()
    info = page.locator("#html_info_txt2img").filter(has_text=expected).first
    info.wait_for(timeout=GENERATION_TIMEOUT_MS)
    return info.inner_text()


def prepare_txt2img(page) -> None:
    page.locator("#txt2img_prompt textarea").fill("masterpiece, a cat sitting on a chair")
    set_number(page, "txt2img_steps", 4)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)


def test_one_click_on_a_mode_sets_the_switches_and_the_infotext_names_the_mode(webui, page):
    from playwright.sync_api import expect

    prepare_txt2img(page)
    open_accordion(page, "txt2img")
    mode = page.locator("#script_txt2img_speedkit_mode input[value='Lossless']")
    expect(mode).to_be_checked()  # opening the accordion is the one click to the fastest lossless setting
    open_advanced(page, "txt2img")
    page.locator("#script_txt2img_speedkit_enabled").screenshot(path=str(screenshot_dir() / "modes-lossless.png"))
    for name, key in (("Fast", "Speedkit cutoff: fraction 0.5"), ("Fastest", "Speedkit ToMe: 0.5")):
        pick_mode(page, "txt2img", name)
        expect(page.locator("#script_txt2img_speedkit_mode_cost .speedkit_mode_cost")).not_to_contain_text("Same image")
        text = generate_and_read_infotext(page, f"Speedkit mode: {name}")
        assert key in text
    assert page.locator("#script_txt2img_speedkit_cutoff_mode input").input_value() == "fraction"
    page.locator("#script_txt2img_speedkit_enabled").screenshot(path=str(screenshot_dir() / "modes-fastest.png"))
    set_number(page, "script_txt2img_speedkit_tome_ratio", 0.3)  # a knob by hand: Custom
    expect(page.locator("#script_txt2img_speedkit_mode input[value='Custom']")).to_be_checked()
    text = generate_and_read_infotext(page, "Speedkit ToMe: 0.3")
    assert "Speedkit mode" not in text
    pick_mode(page, "txt2img", "Off")
    page.locator("#txt2img_generate").click()
    page.wait_for_function(
        "() => !document.querySelector('#html_info_txt2img').innerText.includes('Speedkit ToMe: 0.3')",
        timeout=GENERATION_TIMEOUT_MS,
    )
    assert "Speedkit" not in page.locator("#html_info_txt2img").first.inner_text()


def test_the_advanced_switches_generate_and_paste_back(webui, page):
    from playwright.sync_api import expect

    prepare_txt2img(page)
    open_accordion(page, "txt2img")
    open_advanced(page, "txt2img")
    page.locator("#script_txt2img_speedkit_attention input").click()
    unavailable = page.locator("#script_txt2img_speedkit_attention ul.options li[data-value='sdp-cudnn']")
    page.locator(
        "#script_txt2img_speedkit_attention ul.options li.speedkit_unavailable_option[data-value='sdp-cudnn']"
    ).wait_for(timeout=5_000)
    assert "CUDA" in (unavailable.get_attribute("title") or "")
    page.locator("#script_txt2img_speedkit_attention ul.options li[data-value='sdp-math']").click()
    choose(page, "script_txt2img_speedkit_cutoff_mode", "off")
    for name in ("channels_last", "cuda_graph", "lean_step"):
        page.locator(f"#script_txt2img_speedkit_{name} input").uncheck()
    set_number(page, "script_txt2img_speedkit_tome_ratio", 0.5)
    expect(page.locator("#script_txt2img_speedkit_mode input[value='Custom']")).to_be_checked()
    page.locator("#script_txt2img_speedkit_enabled").screenshot(path=str(screenshot_dir() / "accordion.png"))
    text = generate_and_read_infotext(page, "Speedkit attention: sdp-math")
    assert "Speedkit ToMe: 0.5" in text
    page.screenshot(path=str(screenshot_dir() / "txt2img.png"), full_page=True)
    applied = http_json(webui.url + "/speedkit/v1/status")["last_generation"]["applied"]
    assert applied == {"Speedkit attention": "sdp-math", "Speedkit ToMe": "0.5"}

    # Close the accordion, then paste the image's parameters back through the prompt box.
    page.locator("#script_txt2img_speedkit_enabled > .label-wrap").click()
    expect(page.locator("#script_txt2img_speedkit_enabled-checkbox input")).not_to_be_checked(timeout=30_000)
    parameters = http_json(webui.url + "/sdapi/v1/png-info", {"image": _last_image(page)})["info"]
    paste(page, parameters)
    expect(page.locator("#script_txt2img_speedkit_enabled-checkbox input")).to_be_checked(timeout=30_000)
    assert page.locator("#script_txt2img_speedkit_attention input").input_value() == "sdp-math"
    assert float(page.locator("#script_txt2img_speedkit_tome_ratio input[type=number]").input_value()) == 0.5

    # Parameters without Speedkit keys: every control back to its default, the accordion closed.
    paste(page, parameters.split("Speedkit attention")[0].rstrip(", "))
    expect(page.locator("#script_txt2img_speedkit_enabled-checkbox input")).not_to_be_checked(timeout=30_000)
    assert page.locator("#script_txt2img_speedkit_attention input").input_value() == "keep"
    assert float(page.locator("#script_txt2img_speedkit_tome_ratio input[type=number]").input_value()) == 0.0

    # A value this version cannot use: a visible warning instead of silent defaults.
    paste(page, parameters.replace("Speedkit attention: sdp-math", "Speedkit attention: quantum"))
    warning = page.locator("#script_txt2img_speedkit_paste_warning").first
    expect(warning).to_contain_text("could not be used", timeout=30_000)
    expect(warning).to_contain_text("Speedkit attention")
    page.locator("#script_txt2img_speedkit_enabled").screenshot(path=str(screenshot_dir() / "paste-warning.png"))


def paste(page, parameters: str) -> None:
    page.locator("#txt2img_prompt textarea").fill(parameters)
    page.locator("#tab_txt2img #paste").click()


def _last_image(page) -> str:
    """The generated image (as the gallery shows it) as a base64 data URL."""
    src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    with urllib.request.urlopen(urllib.parse.urljoin(page.url, src), timeout=30) as response:
        return "data:image/png;base64," + base64.b64encode(response.read()).decode()


def open_speedkit_tab(page) -> None:
    page.locator("#tabs > .tab-nav button", has_text="Speedkit").click()
    page.locator("#speedkit_bench_run").wait_for()


def one_short_run(page, size: int) -> None:
    """The tab's bench settings for a quick CPU run: 2 steps at size², one timed run, no warm-up."""
    settings = {"steps": 2, "width": size, "height": size, "runs": 1, "warmup": 0}
    for name, value in settings.items():
        set_number(page, f"speedkit_bench_{name}", value)


def test_the_result_card_answers_how_fast_compared_with_the_community(webui, page):
    open_speedkit_tab(page)
    one_short_run(page, size=512)
    page.locator("#speedkit_bench_label textarea").fill("browser")
    choose(page, "speedkit_bench_compare_with", "NVIDIA GeForce RTX 4090")
    page.locator("#speedkit_bench_run").click()
    card = page.locator("#speedkit_bench_result .speedkit_card")
    card.wait_for(timeout=GENERATION_TIMEOUT_MS)
    assert card.locator(".speedkit_big_value").count() == 4
    assert "Sampler" in card.inner_text() and "End-to-end" in card.inner_text()
    bars = card.locator(".speedkit_bar_label")
    assert bars.first.inner_text() == "you" and "NVIDIA GeForce RTX 4090" in bars.all_inner_texts()
    assert "Time taken" in page.locator("#speedkit_bench_result").first.inner_text()  # the WebUI's own wrapper
    assert not page.locator("#speedkit_bench_json").is_visible()  # the raw JSON is folded away
    page.locator("#speedkit_bench_plot").wait_for(state="visible", timeout=30_000)  # a run: the plot shows
    assert "browser" in page.locator("#speedkit_bench_history").inner_text()
    page.screenshot(path=str(screenshot_dir() / "speedkit-tab.png"), full_page=True)


def test_compare_switches_draws_speedup_bars_and_shows_the_largest_image_difference(webui, page):
    open_speedkit_tab(page)
    one_short_run(page, size=64)
    page.locator("#speedkit_bench_compare").click()
    chart = page.locator("#speedkit_bench_result .speedkit_card").filter(has_text="Speedup over the baseline")
    chart.wait_for(timeout=GENERATION_TIMEOUT_MS)
    labels = chart.locator(".speedkit_bar_label").all_inner_texts()
    assert labels[0] == "baseline (Speedkit off)" and "ToMe 0.5" in labels
    assert "PSNR" in chart.inner_text()
    page.locator("#speedkit_bench_images").wait_for(state="visible", timeout=30_000)
    page.screenshot(path=str(screenshot_dir() / "speedkit-compare.png"), full_page=True)


def test_precompile_in_the_tab_reports_each_size_and_names_a_bad_one(webui, page):
    from playwright.sync_api import expect

    open_speedkit_tab(page)
    section = page.locator("#speedkit_precompile")
    section.locator(".label-wrap").first.click()
    sizes = page.locator("#speedkit_precompile_sizes textarea")
    sizes.fill("64x64, 65x64")
    page.locator("#speedkit_precompile_run").click()
    report = page.locator("#speedkit_precompile_report").first
    expect(report).to_contain_text("Precompile did not run: sizes[1]: '65x64' is not allowed", timeout=60_000)
    sizes.fill("64x64")
    page.locator("#speedkit_precompile_run").click()
    expect(report).to_contain_text("needs the CUDA graph, and the WebUI runs on cpu", timeout=60_000)
    http_json(webui.url + "/speedkit-test/cpu-compile", {"on": True})  # CPU graphs, a pass-through compiler
    try:
        page.locator("#speedkit_precompile_run").click()
        row = report.locator("table tbody tr").first  # one 2-step generation, its row
        expect(row).to_contain_text("64×64", timeout=GENERATION_TIMEOUT_MS)
        assert [cell.inner_text() for cell in row.locator("td").all()[:2]] == ["64×64", "1"]
        assert row.locator("td").nth(4).inner_text() == "yes"
    finally:
        http_json(webui.url + "/speedkit-test/cpu-compile", {"on": False})
    assert "Time taken" in report.inner_text()  # through the WebUI's queue wrapper
    page.screenshot(path=str(screenshot_dir() / "speedkit-precompile.png"), full_page=True)
