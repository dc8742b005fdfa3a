"""The live dashboard: a static page (HTML, JS, CSS and the vendored lightweight-charts) the API serves at /dashboard.

The page reads only the API (REST for history, WS /v1/live for what is committed next), so serving it is all the API
does for it: no route of its own, no template, nothing at import. Why a static page and not Streamlit: ADR 0021.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

STATIC_DIR = Path(__file__).resolve().parent / "static"
PATH = "/dashboard"


def mount(app: FastAPI) -> None:
    """Serve the page at /dashboard/ (index.html) from the API's own process: `make demo` needs no other server."""
    from fastapi.staticfiles import StaticFiles

    app.mount(PATH, StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
