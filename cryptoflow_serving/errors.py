"""The API's error answers: one JSON shape, ``{"error": code, "message": ..., ...}``, with a status that says whose
fault it is (docs/api.md, "Errors"). A bad parameter is the client's (400, and the message says what is allowed), a
table dbt has not built yet is the platform's state (503, and the message says what builds it), never a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than 200: raised anywhere below a route, turned into JSON by the app's handler."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.extra = status, code, message, headers, extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


def bad_parameter(parameter: str, message: str) -> ApiError:
    return ApiError(400, "bad_parameter", message, parameter=parameter)


def install(app: FastAPI) -> None:
    from cryptoflow_serving.formats import JSONResponse  # formats raises ApiError: imported here, not at the top

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own checks (a limit that is not an integer, ...): 400 like ours, naming the parameter.
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header")]
        name = ".".join(where) or "request"
        return JSONResponse(
            {"error": "bad_parameter", "message": f"{name}: {first.get('msg', 'invalid')}", "parameter": name},
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such path: see /docs for the API" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": code, "message": message}, status_code=exc.status_code,
                              headers=getattr(exc, "headers", None))
