"""The browser pages: the voice page at ``/`` and the kiosk avatar display at ``/kiosk``.

Plain HTML and ES modules in ``gateway/static`` (no build step), served as they are.
The pages are no-cache so that an upgraded gateway is picked up on the next load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
NO_CACHE = {"Cache-Control": "no-cache"}


class _RevalidatedFiles(StaticFiles):
    """Static files that the browser revalidates (ETag) instead of caching blindly."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(NO_CACHE)
        return response


async def voice_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def kiosk_page() -> FileResponse:
    return FileResponse(STATIC / "kiosk.html", headers=NO_CACHE)


def install_pages(app: FastAPI) -> None:
    app.add_api_route("/", voice_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/kiosk", kiosk_page, methods=["GET"], include_in_schema=False)
    app.mount("/static", _RevalidatedFiles(directory=STATIC), name="static")
