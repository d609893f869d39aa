"""/docs and /redoc work offline: every asset they reference is served by the app itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from driftwarden.bundles import load_bundle
from driftwarden.model_server.app import create_app
from driftwarden.model_server.settings import Settings

pytestmark = pytest.mark.anyio

EXPECTED_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


@pytest.fixture
def anyio_backend():
    return "asyncio"


class References(HTMLParser):
    """Collects every URL a page makes the browser load: src, href, ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)


def referenced(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    # Swagger UI gets its document from the inline script: `url: '/openapi.json'`.
    parser.urls += re.findall(r"\burl:\s*'([^']+)'", page)
    return parser.urls


@pytest.mark.parametrize("root_path", ["", "/models/iris"])
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_every_asset_the_page_references_is_served_locally(page, root_path):
    app = create_app(Settings(bundle="unused://"), bundle=load_bundle("builtin://iris"))
    async with app.router.lifespan_context(app):
        # root_path: behind a reverse proxy that strips a prefix, links must keep it.
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            html = await client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            # Nothing outside the server: no scheme, no protocol-relative //host URL.
            assert not re.search(r"(https?:)?//[a-z]", html.text.replace("<!--", "")), html.text
            urls = referenced(html.text)
            suffixes = {url.rsplit(".", 1)[-1] for url in urls}
            expected = {"js", "png", "json"} | ({"css"} if page == "/docs" else set())
            assert suffixes == expected, urls
            for url in urls:
                assert url.startswith(f"{root_path}/"), url
                asset = await client.get(url)
                assert asset.status_code == 200, url
                kind = EXPECTED_TYPES["." + url.rsplit(".", 1)[-1]]
                assert asset.headers["content-type"].startswith(kind), (url, asset.headers)
                assert len(asset.content) > 1000, url  # the real bundle, not a stub


async def test_the_assets_are_the_swagger_ui_and_redoc_bundles():
    app = create_app(Settings(bundle="unused://"), bundle=load_bundle("builtin://iris"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        swagger = (await client.get("/docs-assets/swagger-ui-bundle.js")).text
        redoc = (await client.get("/docs-assets/redoc.standalone.js")).text
        missing = await client.get("/docs-assets/nothing.js")
    assert "SwaggerUIBundle" in swagger and len(swagger) > 500_000
    assert "Redoc" in redoc and len(redoc) > 500_000
    assert missing.status_code == 404
