"""Tier 2: Speedkit's REST routes are as safe as the WebUI's own API.

Three WebUIs: one with `--api-auth` (API only), one with a login (`--gradio-auth`) and no `--api`,
and the shared one (`--api`, no credentials) for what slimming may read and write.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request

import pytest
from harness import WebUIServer, a1111_dir, basic_auth_header, http_json
from helpers import post

API_USER = ("speedkit", "pa55-w0rd")
LOGIN_USER = ("artist", "brush")
TINY_BENCH = {"preset": "SD1.5 quick", "overrides": {"runs": 1, "warmup": 0, "steps": 2, "width": 64, "height": 64}}
SLIM_CHECKS = {"load_test": False, "load_speed": False}


def call(url: str, payload: dict | None = None, **kwargs) -> tuple[int, dict, dict]:
    """(status, decoded body, headers) of a GET or POST, errors included."""
    try:
        return 200, http_json(url, payload, **kwargs), {}
    except urllib.error.HTTPError as error:
        body = error.read().decode() or "{}"
        return error.code, json.loads(body), dict(error.headers)


def start(**kwargs) -> WebUIServer:
    if a1111_dir() is None:
        pytest.skip("tier 2 skipped: set SPEEDKIT_A1111_DIR")
    return WebUIServer(**kwargs).__enter__()


@pytest.fixture(scope="module")
def api_auth_webui():
    server = start(api_only=True, auth=API_USER, extra_args=("--api-auth", ":".join(API_USER)))
    yield server
    server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def login_webui():
    server = start(api=False, auth=LOGIN_USER, extra_args=("--gradio-auth", ":".join(LOGIN_USER)))
    yield server
    server.__exit__(None, None, None)


ROUTES = [
    ("GET", "/speedkit/v1/status", None),
    ("POST", "/speedkit/v1/bench", TINY_BENCH),
    ("POST", "/speedkit/v1/slim", {"checkpoint": "nothing-to-slim"}),
    ("POST", "/speedkit/v1/precompile", {"sizes": "not-a-size"}),
    ("GET", "/sdapi/v1/sd-models", None),  # the WebUI's own route, for comparison
]


@pytest.mark.parametrize(("method", "path", "payload"), ROUTES, ids=[r[1] for r in ROUTES])
@pytest.mark.parametrize(
    "credentials", [None, ("speedkit", "wrong"), ("nobody", "pa55-w0rd")], ids=["none", "bad", "stranger"]
)
def test_with_api_auth_every_route_answers_401_without_the_credentials(
    api_auth_webui, method, path, payload, credentials
):
    code, body, _headers = call(api_auth_webui.url + path, payload, auth=credentials)
    assert code == 401, body
    assert body["detail"] in ("Incorrect username or password", "Not authenticated")


def test_with_api_auth_the_routes_answer_with_the_credentials(api_auth_webui):
    url = api_auth_webui.url
    assert call(url + "/speedkit/v1/status", auth=API_USER)[0] == 200
    code, result, _ = call(url + "/speedkit/v1/bench", TINY_BENCH, auth=API_USER)
    assert code == 200 and result["runs"], result
    code, body, _ = call(url + "/speedkit/v1/slim", {"checkpoint": "nothing-to-slim"}, auth=API_USER)
    assert code == 422 and body["detail"].startswith("speedkit slim: checkpoint:"), body  # past the gate
    code, body, _ = call(url + "/speedkit/v1/precompile", {"sizes": "not-a-size"}, auth=API_USER)
    assert code == 422 and body["detail"].startswith("speedkit precompile: sizes[0]:"), body


def test_with_a_login_status_needs_the_login_and_the_heavy_routes_need_the_api(login_webui):
    url = login_webui.url
    assert call(url + "/speedkit/v1/status")[0] == 401
    assert call(url + "/speedkit/v1/status", auth=("artist", "wrong"))[0] == 401
    assert call(url + "/speedkit/v1/status", auth=LOGIN_USER)[0] == 200
    # Without --api the WebUI has no REST API, and neither do the routes that write or hold the GPU.
    assert call(url + "/speedkit/v1/bench", TINY_BENCH, auth=LOGIN_USER)[0] == 404
    assert call(url + "/speedkit/v1/slim", {"checkpoint": "x"}, auth=LOGIN_USER)[0] == 404
    assert call(url + "/speedkit/v1/precompile", {}, auth=LOGIN_USER)[0] == 404
    assert call(url + "/sdapi/v1/sd-models", auth=LOGIN_USER)[0] == 404


def test_with_a_login_the_browser_session_of_a_logged_in_user_is_enough(login_webui):
    form = urllib.parse.urlencode({"username": LOGIN_USER[0], "password": LOGIN_USER[1]}).encode()
    request = urllib.request.Request(login_webui.url + "/login", data=form)
    with urllib.request.urlopen(request, timeout=30) as response:
        cookies = [value.split(";")[0] for key, value in response.headers.items() if key.lower() == "set-cookie"]
    assert any(cookie.startswith("access-token") for cookie in cookies)
    headers = {"Cookie": "; ".join(cookies)}
    assert call(login_webui.url + "/speedkit/v1/status", headers=headers)[0] == 200
    assert call(login_webui.url + "/speedkit/v1/status", headers={"Cookie": "access-token=forged"})[0] == 401


def test_the_auth_header_is_what_a_client_sends():
    assert basic_auth_header(("a", "b:c")) == {"Authorization": "Basic YTpiOmM="}


# --------------------------------------------------------------------------- what slimming may touch


class CodeRunningPickle:
    """Unpickling this runs a shell command that creates `marker` (what an attacker would ship)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def folders(webui, tmp_path_factory):
    """The WebUI's checkpoint folder, a folder outside it, a code-running pickle in each."""
    import torch

    models = webui.data_dir / "models" / "Stable-diffusion"
    models.mkdir(parents=True, exist_ok=True)
    outside = tmp_path_factory.mktemp("outside-the-models")
    marker = outside / "code-ran"
    for folder in (models, outside):
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": CodeRunningPickle(marker)}, folder / "evil.ckpt")
    shutil.copy(webui.assets.checkpoint, outside / "outside.safetensors")
    (models / "escape.safetensors").symlink_to(outside / "outside.safetensors")
    return {"models": models, "outside": outside, "marker": marker}


def files_in(*folders) -> set:
    return {path for folder in folders for path in folder.rglob("*")}


def slim(webui, body: dict) -> tuple[int, dict]:
    return post(webui, "/speedkit/v1/slim", {**SLIM_CHECKS, **body})


@pytest.mark.parametrize(
    "where",
    ["outside", "missing-outside", "traversal", "symlink-not-listed", "gradio-upload"],
)
def test_slim_refuses_files_outside_the_models_folders_and_writes_nothing(webui, folders, where):
    models, outside = folders["models"], folders["outside"]
    checkpoint = {
        "outside": outside / "outside.safetensors",
        "missing-outside": outside / "no-such-file.safetensors",
        "traversal": models / os.path.relpath(outside / "outside.safetensors", models),
        "symlink-not-listed": models / "escape.safetensors",
        "gradio-upload": outside / "evil.ckpt",  # where gradio's /upload would have put it
    }[where]
    before = files_in(models, outside)
    code, body = slim(webui, {"checkpoint": str(checkpoint)})
    assert code == 422, body
    expected = "expected a checkpoint from the WebUI's list, or a file inside its checkpoint folders"
    assert body["detail"] == f"speedkit slim: checkpoint: {str(checkpoint)!r} is not allowed; {expected}"
    assert files_in(models, outside) == before
    assert not folders["marker"].exists()


def test_slim_never_unpickles_code_from_a_request(webui, folders):
    models = folders["models"]
    http_json(webui.url + "/sdapi/v1/refresh-checkpoints", {})
    before = files_in(models, folders["outside"])
    code, body = slim(webui, {"checkpoint": str(models / "evil.ckpt"), "allow_unsafe_pickle": True})
    assert code == 422 and "allow_unsafe_pickle" in body["detail"] and "not accepted over HTTP" in body["detail"]
    code, body = slim(webui, {"checkpoint": str(models / "evil.ckpt")})  # listed now; read the safe way
    assert code == 422 and "needs more than tensors" in body["detail"], body
    assert not folders["marker"].exists()
    assert files_in(models, folders["outside"]) == before


def test_slim_writes_only_into_the_models_folder(webui, folders):
    """The WebUI's --ckpt file lies outside the models folder: its slim copy goes into the folder."""
    source = webui.assets.checkpoint
    before_beside_source = files_in(source.parent)
    code, result = slim(webui, {"checkpoint": str(source), "suffix": "-slim-here"})
    assert code == 200, result
    output = folders["models"] / f"{source.stem}-slim-here.safetensors"
    assert result["output"] == str(output) and output.is_file()
    assert result["yaml"] == str(output.with_suffix(".yaml"))
    assert files_in(source.parent) == before_beside_source


def test_slim_accepts_a_listed_symlinked_model_as_the_webui_loads_it(webui, folders):
    """A file the WebUI lists is one it would load as a model anyway: the list is the boundary."""
    http_json(webui.url + "/sdapi/v1/refresh-checkpoints", {})
    code, result = slim(webui, {"checkpoint": "escape.safetensors", "suffix": "-slim-link"})
    assert code == 200, result
    assert result["output"] == str(folders["models"] / "escape-slim-link.safetensors")
