"""App assembly and entry point: one process, one port, one asyncio loop for every protocol the simulator speaks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timezone
import sys

import uvicorn
from starlette.applications import Starlette

from cryptoflow_core.settings import load_env_files
from exchange_sim import binance_rest, binance_ws, control, fear_greed, slack_sink, upbit_rest, upbit_ws
from exchange_sim.config import SimConfig, parse_args
from exchange_sim.model import DAY_MS
from exchange_sim.state import Sim, now_ms
from exchange_sim.ws_batch import BatchingWebSocketProtocol

log = logging.getLogger(__name__)


async def warm_up(sim: Sim) -> None:
    """Generate every listed market's previous and current day once, a market at a time with the loop yielded between:
    a client's first ticker over every market (the platform resolving TOP50 from ``ticker/24hr``) then finds the
    day folds ready instead of waiting for them (13 s for 50 symbols, cold, on a machine at load 17)."""
    await asyncio.sleep(1.0)  # let the first connections and health checks in first
    for spec in [*sim.binance.values(), *sim.upbit.values()]:  # Binance first: TOP50 is resolved from its tickers
        now = now_ms()
        day = now // DAY_MS
        sim.model.totals(spec, day - 1, day * DAY_MS)
        sim.model.totals(spec, day, now + 1)
        await asyncio.sleep(0)


def build_app(config: SimConfig) -> Starlette:
    sim = Sim(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(warm_up(sim))
        try:
            yield
        finally:
            task.cancel()

    app = Starlette(
        lifespan=lifespan,
        routes=[
            *upbit_rest.routes(sim),
            *upbit_ws.routes(),
            *binance_rest.routes(sim),
            *binance_ws.routes(),
            *fear_greed.routes(sim),
            *slack_sink.routes(sim),
            *control.routes(sim),
        ]
    )
    app.state.sim = sim
    return app


def serve(config: SimConfig) -> None:
    app = build_app(config)
    start = datetime.fromtimestamp(app.state.sim.history_start_ms / 1000, timezone.utc).date()
    log.info("exchange simulator on http://%s:%d (history from %s)", config.host, config.port, start)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        ws=BatchingWebSocketProtocol,  # uvicorn's sans-io protocol with one-write frame batches (ws_batch.py)
        ws_ping_interval=config.ws_ping_interval_s,
        ws_ping_timeout=60.0,  # Binance wants a pong within a minute
        ws_per_message_deflate=False,  # compression would cap the firehose
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    load_env_files()
    config = parse_args(argv)
    try:
        serve(config)
    except (ValueError, OSError) as exc:  # a bad real-data CSV or a port in use: say so, no traceback
        log.error("exchange simulator cannot start: %s", exc)
        return 2
    return 0
