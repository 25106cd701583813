"""Who may call Speedkit's REST routes: the WebUI's own credentials, and `--api` for the heavy ones.

Rules (each route is added through `add_route`, which always attaches `require_access`):
  * `--api-auth user:pass[,user2:pass2]`: HTTP Basic with one of those credentials, as A1111's
    own `/sdapi` routes; 401 otherwise.
  * no `--api-auth`, but a login (`--gradio-auth`, `--gradio-auth-path`): the browser session of a
    logged-in user (Gradio's `access-token` cookie) or HTTP Basic with one of the login's
    credentials; 401 otherwise. (A1111 leaves its `/sdapi` routes open in that setup; a WebUI
    someone protected with a login gets that login on Speedkit's routes too.)
  * neither: open, like the WebUI's API without `--api-auth`.
  * Routes that write files or hold the GPU (`bench`, `slim`) exist only when the WebUI runs its
    API (`--api` or `--nowebui`), like A1111's own API; the Speedkit tab works without them.
"""

from secrets import compare_digest

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from modules import initialize_util, shared

UNAUTHORIZED = "Incorrect username or password"


def parse_credentials(text) -> dict:
    """`user:pass,user2:pass2` -> {user: pass} (a password may contain ':')."""
    pairs = (item.strip().split(":", 1) for item in (text or "").split(",") if item.strip())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def api_credentials() -> dict[str, str]:
    return parse_credentials(getattr(shared.cmd_opts, "api_auth", None))


def login_credentials() -> dict[str, str]:
    """The WebUI's login (--gradio-auth / --gradio-auth-path) as {user: password}."""
    return {user: password for user, password in initialize_util.get_gradio_auth_creds()}


def api_enabled() -> bool:
    """True when the WebUI runs its REST API (`--api` or API only with `--nowebui`)."""
    return bool(getattr(shared.cmd_opts, "api", False) or getattr(shared.cmd_opts, "nowebui", False))


def _basic_matches(credentials, allowed: dict[str, str]) -> bool:
    if credentials is None or credentials.username not in allowed:
        return False
    return compare_digest(credentials.password.encode(), allowed[credentials.username].encode())


def _logged_in(request) -> bool:
    tokens = getattr(request.app, "tokens", None) or {}
    token = request.cookies.get("access-token") or request.cookies.get("access-token-unsecure")
    return token is not None and tokens.get(token) is not None


def _unauthorized() -> HTTPException:
    return HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Basic"})


def check_access(request, credentials) -> None:
    """Raise 401 unless the request carries what the WebUI's configuration asks for."""
    api = api_credentials()
    if api:
        if not _basic_matches(credentials, api):
            raise _unauthorized()
        return
    login = login_credentials()
    if login and not (_logged_in(request) or _basic_matches(credentials, login)):
        raise _unauthorized()


_OPTIONAL_BASIC = Depends(HTTPBasic(auto_error=False))


def require_access(request: Request, credentials: HTTPBasicCredentials | None = _OPTIONAL_BASIC) -> None:
    """The FastAPI dependency of every Speedkit route (annotations are evaluated by FastAPI: this
    module does not use postponed annotations)."""
    check_access(request, credentials)


def add_route(app, path: str, endpoint, methods: list[str], *, needs_api: bool) -> bool:
    """Add one of Speedkit's routes behind `require_access`; a `needs_api` route only with the API.
    Returns whether the route was added."""
    if needs_api and not api_enabled():
        return False
    app.add_api_route(path, endpoint, methods=methods, dependencies=[Depends(require_access)])
    return True
