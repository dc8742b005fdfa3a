"""The FastAPI application: :func:`create_app` builds it from settings (``cryptoflow serve`` runs it with uvicorn,
tests and benchmarks run it the same way on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_serving import dashboard, errors
from cryptoflow_serving.auth import AuthMiddleware, Keys, RateLimiter
from cryptoflow_serving.cache import AnswerCache
from cryptoflow_serving.formats import JSONResponse
from cryptoflow_serving.live import Feed
from cryptoflow_serving.reads import Reader
from cryptoflow_serving.routes import router

API_VERSION = "1"


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` on every HTTP answer: the time from the request reaching the app to its first
    byte, so a client (the benchmark) can tell the API's own time from the network's and its own."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                took = (time.perf_counter() - began) * 1000
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"server-timing", f"app;dur={took:.2f}".encode())]}
            await send(message)

        await self.app(scope, receive, timed)


def create_app(settings: Settings | None = None, *, poll_s: float = 0.5, queue_size: int = 10_000,
               read_workers: int = 4, cache_bytes: int = 64 * 1024 * 1024) -> FastAPI:
    settings = settings or load_settings()
    reader = Reader(settings, workers=read_workers)
    cache = AnswerCache(cache_bytes)
    feed = Feed(reader, poll_s=poll_s, queue_size=queue_size, cache=cache)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run(), name="live-feed")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            reader.close()

    app = FastAPI(
        title="CryptoFlow market data API",
        version=API_VERSION,
        description="Prices, bars, statistics, indicators, volatility, premium, sentiment, alerts and data health from "
        "the CryptoFlow lake, read-only, each answer at one lake snapshot. Contract: docs/api.md.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.settings, app.state.reader, app.state.feed, app.state.cache = settings, reader, feed, cache
    app.state.keys = Keys(settings.api_keys)
    app.add_middleware(AuthMiddleware, keys=app.state.keys, limiter=RateLimiter(settings.api_rate_limit))
    app.add_middleware(ServerTiming)
    errors.install(app)
    app.include_router(router)
    dashboard.mount(app)  # the live dashboard at /dashboard/: static files reading this API (issue 18, ADR 0021)

    @app.get("/healthz", summary="Liveness: the process answers (no lake read)")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    return app
