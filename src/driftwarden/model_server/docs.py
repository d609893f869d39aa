"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with their assets from the package.

FastAPI's own pages load Swagger UI and ReDoc from a public CDN, which leaves them blank
in an air-gapped cluster. The pinned ``fastapi-offline`` package ships both bundles
(``swagger-ui-bundle.js``, ``swagger-ui.css``, ``redoc.standalone.js``) and a favicon as
package data; they are mounted under :data:`ASSETS_PATH` and the pages reference only
them and ``/openapi.json``, relative to the app's root path (so a reverse proxy's prefix
works). Swagger UI's online validator badge is off: it would call out to the internet.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs-assets"
# The assets' package: fastapi-offline (pinned in constraints.txt) ships them as data.
ASSETS_PACKAGE = "fastapi_offline"


def assets_directory() -> str:
    """Return the directory holding the Swagger UI and ReDoc bundles."""
    return str(files(ASSETS_PACKAGE) / "static")


def add_offline_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` and ReDoc at ``/redoc`` without any network access.

    The app must be created with ``docs_url=None, redoc_url=None`` (FastAPI's CDN pages).
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_PATH}"

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
