"""The market-data API's read endpoints against a real lake: a real `cryptoflow serve` process (uvicorn) on 127.0.0.1,
a lake in tmp filled through the platform's own writers (tests/api_lake.py), httpx as the client. What the API
answers is checked against an independent computation over the same trades (Polars), and against the lake itself."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import httpx
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api_lake import DAY, MARKETS, fill_day
from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_serving.testing import running_api

BAR_COLUMNS = ["exchange", "market", "ts", "open", "high", "low", "close", "volume", "quote_volume", "trade_count", "vwap"]


@pytest.fixture(scope="module")
def day_lake(tmp_path_factory):
    home = tmp_path_factory.mktemp("api_home")
    env = {"CRYPTOFLOW_HOME": str(home), "CRYPTOFLOW_API_RATE_LIMIT": "0"}  # the limit has its own test
    settings = load_settings(env)
    trades = fill_day(settings)
    alerts = [Alert(rule=rule, dedupe_key=f"{rule}-{i}", message=f"{rule} #{i}", exchange="upbit", market="KRW-BTC",
                    triggered_at=DAY + timedelta(minutes=10 * i), value=float(i), threshold=1.0)
              for i, rule in enumerate(["price_move"] * 5 + ["volume_spike"] * 3)]
    candles = pl.DataFrame({"exchange": ["upbit"] * 3, "market": ["KRW-BTC"] * 3,
                            "day": [DAY.date() - timedelta(days=d) for d in (2, 1, 0)],
                            "open": [1.0, 2.0, 3.0], "high": [2.0, 3.0, 4.0], "low": [0.5, 1.5, 2.5],
                            "close": [2.0, 3.0, 3.5], "volume": [10.0, 11.0, 12.0], "quote_volume": [20.0, 30.0, 40.0]})
    with lake.session(settings) as con:
        outbox.record(con, alerts)
        lake.write(con, lambda c: lake.insert(c, "silver.candles_1d", candles))
    with running_api(env) as api:
        yield api, trades, settings


@pytest.fixture(scope="module")
def client(day_lake):
    with httpx.Client(base_url=day_lake[0].url, timeout=30) as c:
        yield c


def reference_bars(trades: pl.DataFrame) -> pl.DataFrame:
    """1-minute bars computed here, independently of the platform's SQL: first/last by (ts, trade_id)."""
    return (trades.sort("ts", "trade_id")
            .group_by("exchange", "market", pl.col("ts").dt.truncate("1m"), maintain_order=True)
            .agg(open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
                 close=pl.col("price").last(), volume=pl.col("volume").sum(),
                 quote_volume=pl.col("quote_volume").sum(), trade_count=pl.len(),
                 vwap=pl.col("quote_volume").sum() / pl.col("volume").sum())
            .sort("exchange", "market", "ts"))


def as_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows)
    return frame.with_columns(pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us"))


def test_a_day_of_bars_pages_by_cursor_and_equals_an_independent_aggregation(day_lake, client):
    _, trades, _ = day_lake
    want = reference_bars(trades.filter(pl.col("market") == "KRW-BTC"))
    pages, cursor = [], None
    while True:
        params = {"exchange": "upbit", "market": "KRW-BTC", "day": "2025-09-01", "limit": 500}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/bars/1m", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [500, 500, 440]
    got = as_frame([row for page in pages for row in page])
    assert got.columns == BAR_COLUMNS and got.height == 1440 == want.height
    for column in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
        assert got[column].to_list() == pytest.approx(want[column].to_list(), rel=1e-12), column
    assert got["ts"].to_list() == want["ts"].to_list()
    assert got["trade_count"].to_list() == want["trade_count"].to_list()

    # newest first, and a time range in epoch seconds with the end exclusive
    start = int((DAY + timedelta(hours=23)).timestamp())
    r = client.get("/v1/bars/1m", params={"market": "KRW-BTC", "start": start, "end": start + 600, "order": "desc"})
    rows = r.json()["data"]
    assert [row["ts"] for row in rows] == [(DAY + timedelta(hours=23, minutes=m)).isoformat() for m in range(9, -1, -1)]


def test_bulk_formats_carry_every_market_and_stream_in_pages(day_lake, client):
    _, trades, _ = day_lake
    want = reference_bars(trades)
    r = client.get("/v1/bars/1m", params={"day": "2025-09-01", "format": "parquet"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.column_names == BAR_COLUMNS and table.num_rows == 3 * 1440 == want.height
    got = pl.from_arrow(table).sort("exchange", "market", "ts")
    assert got["close"].to_list() == pytest.approx(want["close"].to_list(), rel=1e-12)
    assert int(r.headers["x-row-count"]) == table.num_rows and "x-next-cursor" not in r.headers

    # Arrow IPC chosen by the Accept header; a limit gives a cursor to the rest, and the pages join up exactly
    arrow = "application/vnd.apache.arrow.stream"
    first = client.get("/v1/bars/1m", params={"day": "2025-09-01", "limit": 3000}, headers={"Accept": arrow})
    assert first.headers["content-type"] == arrow
    rest = client.get("/v1/bars/1m", params={"day": "2025-09-01", "limit": 3000,
                                             "cursor": first.headers["x-next-cursor"]}, headers={"Accept": arrow})
    pieces = [pa.ipc.open_stream(x.content).read_all() for x in (first, rest)]
    assert [p.num_rows for p in pieces] == [3000, 1320]
    joined = pl.concat([pl.from_arrow(p) for p in pieces])
    assert joined.select("exchange", "market", "ts").equals(want.select("exchange", "market", "ts"))

    # CSV: a header and one line per bar
    csv = client.get("/v1/bars/1m", params={"market": "BTCUSDT", "day": "2025-09-01", "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].replace('"', "").split(",") == BAR_COLUMNS and len(lines) == 1441
    assert client.get("/v1/bars/1m", headers={"Accept": "image/png"}).status_code == 406


def test_latest_price_stats_and_premium_match_the_trades(day_lake, client):
    _, trades, _ = day_lake
    markets = client.get("/v1/markets").json()
    assert markets["count"] == 3 and markets["snapshot"] > 0
    for row in markets["data"]:
        mine = trades.filter((pl.col("exchange") == row["exchange"]) & (pl.col("market") == row["market"]))
        last = mine.sort("ts", "trade_id").row(-1, named=True)
        assert row["last_price"] == pytest.approx(last["price"], rel=1e-12)
        assert row["last_trade_id"] == last["trade_id"]
    only = client.get("/v1/markets", params={"exchange": "binance"}).json()["data"]
    assert [(r["exchange"], r["market"]) for r in only] == [("binance", "BTCUSDT")]

    stats = client.get("/v1/stats/24h", params={"exchange": "upbit", "market": "KRW-BTC"}).json()["data"]
    assert len(stats) == 1
    mine = trades.filter(pl.col("market") == "KRW-BTC").sort("ts", "trade_id")
    s = stats[0]
    assert s["trade_count_24h"] == mine.height
    assert s["open_24h"] == pytest.approx(mine["price"][0]) and s["last_price"] == pytest.approx(mine["price"][-1])
    assert s["high_24h"] == pytest.approx(mine["price"].max()) and s["low_24h"] == pytest.approx(mine["price"].min())
    assert s["volume_24h"] == pytest.approx(mine["volume"].sum(), rel=1e-12)

    rows = client.get("/v1/kimchi-premium", params={"asset": "BTC", "start": "2025-09-01T12:00:00Z",
                                                    "end": "2025-09-01T12:05:00Z"}).json()["data"]
    assert len(rows) == 5
    bars = reference_bars(trades).filter(pl.col("ts") == datetime(2025, 9, 1, 12, tzinfo=timezone.utc))
    close = {m: bars.filter(pl.col("market") == m)["close"][0] for m in ("KRW-BTC", "BTCUSDT", "KRW-USDT")}
    assert rows[0]["premium_pct"] == pytest.approx(
        (close["KRW-BTC"] / (close["BTCUSDT"] * close["KRW-USDT"]) - 1) * 100, rel=1e-9)


def test_alerts_daily_candles_and_health(day_lake, client):
    r = client.get("/v1/alerts", params={"rule": "volume_spike", "order": "desc"}).json()
    assert [a["message"] for a in r["data"]] == ["volume_spike #7", "volume_spike #6", "volume_spike #5"]
    assert all(a["status"] == "pending" for a in r["data"])
    window = client.get("/v1/alerts", params={"start": "2025-09-01T00:10:00Z", "end": "2025-09-01T00:30:00Z"}).json()
    assert [a["message"] for a in window["data"]] == ["price_move #1", "price_move #2"]

    daily = client.get("/v1/bars/1d", params={"market": "KRW-BTC", "start": "2025-08-31"}).json()["data"]
    assert [d["day"] for d in daily] == ["2025-08-31", "2025-09-01"]

    health = client.get("/v1/health").json()
    tables = {t["table"]: t for t in health["tables"]}
    assert tables["silver.trades"]["latest"] == "2025-09-01T23:59:30+00:00" and tables["silver.trades"]["lag_s"] > 0
    assert tables["gold.indicators_daily"]["exists"] is False  # dbt has not run on this lake
    assert {(m["exchange"], m["market"]) for m in health["markets"]} == {(e, m) for e, m, _ in MARKETS}
    assert health["alerts"]["pending"] == 8 and health["cannot_show"]


@pytest.mark.parametrize("path, table", [
    ("/v1/indicators/daily", "gold.indicators_daily"),
    ("/v1/volatility/daily", "gold.volatility_daily"),
    ("/v1/volatility/rolling?window=20", "gold.volatility_rolling"),
    ("/v1/sentiment/daily", "gold.sentiment_daily"),
])
def test_a_table_dbt_has_not_built_is_a_503_that_says_what_builds_it(client, path, table):
    r = client.get(path)
    assert r.status_code == 503
    assert r.json()["error"] == "not_built" and r.json()["table"] == table and "dbt" in r.json()["message"]


def test_optional_forecast_tables_answer_empty_when_nothing_is_there(client):
    r = client.get("/v1/volatility/forecast", params={"model": "garch", "horizon_days": 1})
    assert r.status_code == 200 and r.json()["data"] == []


BAD = [
    ("/v1/bars/1m?exchange=kraken", "exchange", "upbit, binance"),
    ("/v1/bars/1m?exchange=upbit&market=BTCUSDT", "market", "KRW-BTC"),
    ("/v1/bars/5m", "interval", "1m, 1d"),
    ("/v1/bars/1d?source=trades", "source", "exchange"),
    ("/v1/bars/1m?format=xlsx", "format", "json, csv, arrow, parquet"),
    ("/v1/bars/1m?order=sideways", "order", "asc, desc"),
    ("/v1/bars/1m?limit=10001", "limit", "1 to 10,000"),
    ("/v1/bars/1m?limit=0", "limit", "1 to"),
    ("/v1/bars/1m?limit=2000000&format=csv", "limit", "1 to 1,000,000"),
    ("/v1/bars/1m?limit=ten", "limit", "integer"),
    ("/v1/bars/1m?start=2025-09-02&end=2025-09-01", "end", "before start"),
    ("/v1/bars/1m?start=1756684800000", "start", "epoch milliseconds"),
    ("/v1/bars/1m?start=yesterday", "start", "ISO 8601"),
    ("/v1/bars/1m?start=nan", "start", "ISO 8601"),
    ("/v1/bars/1m?day=2025-13-01", "day", "YYYY-MM-DD"),
    ("/v1/bars/1m?day=2025-09-01&start=2025-09-01", "day", "not both"),
    ("/v1/bars/1m?cursor=bm90LWEtY3Vyc29y", "cursor", "next_cursor"),
    ("/v1/alerts?status=lost", "status", "pending, sent, failed"),
    ("/v1/volatility/rolling?window=twenty", "window", "integer"),
    ("/v1/bars/1m?strat=2025-09-01", "strat", "start"),
    ("/v1/kimchi-premium?day=2025-09-01", "day", "asset"),
    ("/v1/markets?exchange=upbit&markte=KRW-BTC", "markte", "market"),
    ("/v1/kimchi-premium?asset=btc", "asset", "BTC"),
]


@pytest.mark.parametrize("path, parameter, allowed", BAD)
def test_bad_input_is_a_400_that_says_what_is_allowed(client, path, parameter, allowed):
    r = client.get(path)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "bad_parameter" and body["parameter"] == parameter and allowed in body["message"]


INJECTIONS = ["KRW-BTC' OR '1'='1", "x'; DROP TABLE silver.trades; --", "1) UNION SELECT * FROM ops.gaps --",
              "%' --", "\x00", "KRW-BTC\"", "' OR 1=1 --"]
STRING_PARAMS = ["exchange", "market", "start", "end", "day", "order", "format", "cursor", "source"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_attempts_in_every_string_parameter_are_refused_or_data(day_lake, client, value):
    for name in STRING_PARAMS:
        r = client.get(f"/v1/bars/1m?{name}={quote(value)}")
        assert r.status_code == 400, (name, value, r.text)
    for path, name in [("/v1/alerts", "rule"), ("/v1/alerts", "status"), ("/v1/kimchi-premium", "asset"),
                       ("/v1/volatility/forecast", "model"), ("/v1/bars/1m", "limit")]:
        assert client.get(f"{path}?{name}={quote(value)}").status_code == 400, (path, name, value)
    # nothing was changed: the lake still holds the day
    with lake.session(day_lake[2], read_only=True) as con:
        assert con.execute("SELECT count(*) FROM silver.trades").fetchone()[0] == 3 * 2880


def test_openapi_lists_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/markets", "/v1/stats/24h", "/v1/bars/{interval}", "/v1/indicators/daily", "/v1/volatility/daily",
              "/v1/volatility/rolling", "/v1/volatility/forecast", "/v1/kimchi-premium", "/v1/sentiment/daily",
              "/v1/alerts", "/v1/health"):
        assert p in paths
    assert client.get("/docs").status_code == 200


def test_no_lake_yet_is_a_503_not_a_500(tmp_path):
    env = {"CRYPTOFLOW_HOME": str(tmp_path / "empty")}
    with running_api(env) as api, httpx.Client(base_url=api.url, timeout=30) as c:
        for path in ("/v1/bars/1m", "/v1/markets", "/v1/health"):
            r = c.get(path)
            assert r.status_code == 503 and r.json()["error"] == "lake_unavailable", (path, r.text)
        assert not (tmp_path / "empty" / "lake" / "catalog.sqlite").exists()  # a reader creates no lake
