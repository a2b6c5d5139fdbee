"""The operator console's files at /ui: served from the package with their content types, a
strict Content-Security-Policy and the other security headers, revalidated by ETag; anything
else under /ui, hostile paths included, is a 404 in OpenAI's shape. /admin/whoami says who a key
is, for the console's sign-in."""

from __future__ import annotations

import fnmatch
import http.client
import json
import re
import tomllib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import urllib3

from switchgear.config import Config, parse_config
from switchgear.gateway.ui import CONTENT_TYPES, FOLDER, PACKAGE, load_assets

from servers import create_key, gateway

ADMIN = "sg-console-admin-0123456789abcdef01234567"
CONSOLE = Path(str(files(PACKAGE).joinpath(FOLDER)))
SIM = {"deployments": [{"name": "local", "backend": "simulated",
                        "simulated": {"ttft_ms": 0, "tpot_ms": 0}}]}
#: Ways to name a file outside the console (or no file at all): each must be a plain 404.
HOSTILE_PATHS = [
    "/ui/../pyproject.toml",
    "/ui/../../src/switchgear/config.py",
    "/ui/%2e%2e/app.py",
    "/ui/%2E%2E%2Fapp.py",
    "/ui/..%2f..%2fpyproject.toml",
    "/ui/pages/../../app.py",
    "/ui//etc/passwd",
    "/ui/%2fetc%2fpasswd",
    "/ui/console.js%00",
    "/ui/%00",
    "/ui/console.js%00.png",
    "/ui/..%5c..%5capp.py",
    "/ui/__init__.py",
    "/ui/nope.js",
    "/ui/pages",
    "/uiconsole.js",
]


def config(directory: Path) -> Config:
    return parse_config({"models": {"sim": SIM},
                         "store": {"url": f"sqlite:///{directory}/records.db",
                                   "flush_interval_ms": 20}})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway that requires keys (the bootstrap admin key is set)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SWITCHGEAR_ADMIN_KEY", ADMIN)
        with gateway(config(tmp_path_factory.mktemp("console"))) as base_url:
            yield base_url.removesuffix("/v1")


def raw_get(root: str, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of dots or escapes)."""
    host, port = root.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        connection.close()


def console_files() -> list[str]:
    """Every file under the console folder, as a path below it."""
    return sorted(path.relative_to(CONSOLE).as_posix() for path in CONSOLE.rglob("*")
                  if path.is_file())


def test_the_page_and_its_files_carry_their_types_and_security_headers(root: str) -> None:
    status, headers, body = raw_get(root, "/ui")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == (CONSOLE / "index.html").read_bytes()
    assert raw_get(root, "/ui/")[2] == body
    policy = headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert directive in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    assert "set-cookie" not in headers
    served = [name for name in console_files() if Path(name).suffix in CONTENT_TYPES]
    assert {"index.html", "console.js", "console.css"} <= set(served)
    for name in served:
        status, headers, body = raw_get(root, f"/ui/{name}")
        assert status == 200, name
        assert headers["content-type"] == CONTENT_TYPES[Path(name).suffix].decode(), name
        assert body == (CONSOLE / name).read_bytes()
        assert headers["x-content-type-options"] == "nosniff"


def test_an_unchanged_file_is_revalidated_with_its_etag(root: str) -> None:
    status, headers, _ = raw_get(root, "/ui/console.js")
    etag = headers["etag"]
    assert status == 200 and re.fullmatch(r'"[0-9a-f]{20}"', etag)
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body = raw_get(root, "/ui/console.js", {"If-None-Match": sent})
        assert (status, body, headers["etag"]) == (304, b"", etag), sent
    status, _, body = raw_get(root, "/ui/console.js", {"If-None-Match": '"stale"'})
    assert status == 200 and body


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_anything_but_a_console_file_is_a_404_in_openai_shape(root: str, path: str) -> None:
    status, headers, body = raw_get(root, path)
    assert status == 404, (path, body)
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_the_console_is_only_read(root: str) -> None:
    response = urllib3.request("POST", root + "/ui/console.js", body=b"x", timeout=10)
    assert response.status == 405
    assert json.loads(response.data)["error"]["message"].startswith("POST is not allowed")


def test_the_package_ships_every_console_file() -> None:
    """pyproject's package-data patterns cover every file the console has, and the files are
    read through importlib.resources, as from an installed wheel."""
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"][PACKAGE]
    names = console_files()
    uncovered = [name for name in names
                 if not any(fnmatch.fnmatch(f"{FOLDER}/{name}", p) for p in patterns)]
    assert not uncovered, f"add these to [tool.setuptools.package-data]: {uncovered}"
    assets = load_assets()
    assert sorted(assets) == [n for n in names if Path(n).suffix in CONTENT_TYPES]


def test_the_console_puts_no_markup_from_data_in_the_page() -> None:
    """Text goes in by textContent and text nodes only; nothing is fetched from elsewhere; no
    inline script or style, which the CSP would refuse."""
    for name in console_files():
        text = (CONSOLE / name).read_text()
        if name.endswith(".js"):
            for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                           "eval(", "new Function", 'setAttribute("style"'):
                assert banned not in text, f"{name} uses {banned}"
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} names {urls}"
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"{name}: inline script"
            assert " style=" not in text and "<style" not in text, f"{name}: inline style"
            assert not re.search(r"\son[a-z]+=", text), f"{name}: inline event handler"


def whoami(root: str, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = urllib3.request("GET", root + "/admin/whoami", headers=headers, timeout=10)
    return response.status, json.loads(response.data)


def test_whoami_names_the_role_and_tenant_of_any_key(root: str) -> None:
    status, admin = whoami(root, ADMIN)
    assert status == 200 and admin["open"] is False and admin["role"] == "admin"
    for role in ("operator", "approver", "viewer", "client"):
        made = create_key(root, ADMIN, tenant="acme", name=f"the {role}", role=role)
        status, identity = whoami(root, made["secret"])
        assert status == 200
        assert identity == {"object": "identity", "open": False, **made["key"]}
        assert "secret" not in identity and "digest" not in identity
    for token in (None, "sg-not-a-key-00000000000000000000"):
        status, answer = whoami(root, token)
        assert status == 401 and answer["error"]["type"] == "invalid_request_error"


def test_whoami_in_open_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHGEAR_ADMIN_KEY", raising=False)
    with gateway(config(tmp_path)) as base_url:
        status, identity = whoami(base_url.removesuffix("/v1"), None)
    assert status == 200 and identity["open"] is True and identity["role"] == "admin"


def test_every_page_in_the_nav_is_a_module_of_the_page_api() -> None:
    shell = (CONSOLE / "console.js").read_text()
    listed = re.search(r"export const PAGES = \[([^\]]*)\]", shell)
    assert listed is not None
    names = re.findall(r'"([a-z]+)"', listed.group(1))
    assert names[0] == "overview" and len(names) == len(set(names)) == 8
    for name in names:
        module = (CONSOLE / "pages" / f"{name}.js").read_text()
        assert re.search(r"^export const title = ", module, re.M), name
        assert re.search(r"^export async function render\(root, ctx\)", module, re.M), name
