"""Tier 2: infotext written by the previous version pastes back into the same plan.

tests/webui/data/infotexts-0.1.0.json holds, for each switch case of the earlier tier-2 set, the
infotext the previous version (0.1.0, commit ab6a5fc) wrote in a live WebUI and what its status
reported as applied. Pasting each (the API's `infotext` field, which runs the paste handlers)
must apply exactly that again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import http_json

PREVIOUS = json.loads((Path(__file__).parent / "data" / "infotexts-0.1.0.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def webui_options_kept(webui):
    """Pasted infotext carries host settings ("NGMS: 1.0" becomes an override of s_min_uncond);
    the WebUI restores overrides only of options it had stored before, so put them back here."""
    before = http_json(webui.url + "/sdapi/v1/options")
    yield
    after = http_json(webui.url + "/sdapi/v1/options")
    changed = {key: value for key, value in before.items() if after.get(key) != value}
    if changed:
        http_json(webui.url + "/sdapi/v1/options", changed)


@pytest.mark.parametrize("case", sorted(PREVIOUS["cases"]))
def test_an_infotext_of_the_previous_version_applies_the_same_plan(webui, case):
    recorded = PREVIOUS["cases"][case]
    # hr_sampler_name: the WebUI's API reads no hires sampler from infotext and then fails on its
    # placeholder "Use same sampler" (A1111 1.10.1, nothing to do with Speedkit)
    request = {"infotext": recorded["infotext"], "hr_sampler_name": "Euler", "save_images": False}
    response = http_json(webui.url + "/sdapi/v1/txt2img", {**request, "send_images": False})
    assert json.loads(response["info"])["infotexts"][0]
    last = http_json(webui.url + "/speedkit/v1/status")["last_generation"]
    assert last["enabled"] is True and last["refused"] is None
    assert last["applied"] == recorded["applied"]
