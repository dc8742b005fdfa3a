"""alternative.me Fear & Greed: ``/fng/?limit=N&format=json|csv&date_format=`` serving the recorded history.

The gaps inside the recording stay missing (as on the real API). After the recording ends (2026-03-12) the index
continues as a seeded mean-reverting walk up to today, so a simulated recent history still has sentiment to join.
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timezone
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from exchange_sim.config import RECORDED_DATA
from exchange_sim.state import Sim, now_ms

DEFAULT_CSV = RECORDED_DATA / "fear_greed" / "fear_greed_2018-02-01_2026-03-12.csv"
DATE_FORMATS = {"us": "%m-%d-%Y", "cn": "%Y-%m-%d", "kr": "%Y-%m-%d", "world": "%d-%m-%Y"}


def load(path: Path) -> list[dict]:
    """Rows newest first: {'value','value_classification','timestamp'} with string values, as the API sends them."""
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            day = datetime.fromisoformat(rec["date"].replace("Z", "+00:00"))
            if day.tzinfo is None:
                day = day.replace(tzinfo=timezone.utc)
            rows.append({"value": str(int(rec["value"])), "value_classification": rec["value_classification"],
                         "timestamp": str(int(day.timestamp()))})
    rows.sort(key=lambda r: int(r["timestamp"]), reverse=True)
    return rows


def classify(value: int) -> str:
    # the thresholds the recorded history uses
    if value <= 25:
        return "Extreme Fear"
    if value <= 46:
        return "Fear"
    if value <= 54:
        return "Neutral"
    if value <= 75:
        return "Greed"
    return "Extreme Greed"


def extend(rows: list[dict], until_s: int, seed: int) -> list[dict]:
    """Continue a newest-first history day by day up to ``until_s``, deterministically for the seed."""
    if not rows:
        return rows
    rng = random.Random(seed)
    value, day = int(rows[0]["value"]), int(rows[0]["timestamp"])
    new = []
    while day + 86400 <= until_s:
        day += 86400
        value = max(0, min(100, round(value + 0.1 * (50 - value) + rng.gauss(0, 6))))
        new.append({"value": str(value), "value_classification": classify(value), "timestamp": str(day)})
    return new[::-1] + rows


def routes(sim: Sim) -> list[Route]:
    path = sim.config.fear_greed_csv or DEFAULT_CSV
    history = extend(load(path), now_ms() // 1000 + 366 * 86400, sim.config.seed) if Path(path).is_file() else []

    async def endpoint(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "1"))
        except ValueError:
            limit = -1
        if limit < 0:
            return JSONResponse({"name": "Fear and Greed Index", "data": [], "metadata": {"error": "Invalid limit"}})
        now_s = now_ms() // 1000
        visible = [r for r in history if int(r["timestamp"]) <= now_s]
        rows = [dict(r) for r in (visible if limit == 0 else visible[:limit])]
        if rows:
            rows[0]["time_until_update"] = str(86400 - now_s % 86400)
        date_format = q.get("date_format")
        if date_format in DATE_FORMATS:
            for r in rows:
                r["timestamp"] = datetime.fromtimestamp(int(r["timestamp"]), timezone.utc).strftime(DATE_FORMATS[date_format])
        if q.get("format") == "csv":
            lines = ["fng_value,fng_classification,date"] + [f'{r["value"]},{r["value_classification"]},{r["timestamp"]}' for r in rows]
            return PlainTextResponse("\n".join(lines))
        return JSONResponse({"name": "Fear and Greed Index", "data": rows, "metadata": {"error": None}})

    return [Route("/fng/", endpoint), Route("/fng", endpoint)]
