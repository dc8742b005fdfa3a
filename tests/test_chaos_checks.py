"""chaos.checks.compare_trades, the one comparison of silver.trades with the simulator's trades (the chaos run, the
e2e and shard tests use it): each kind of damage is counted, and a market with no trade in the window is not "lost"."""

from __future__ import annotations

import duckdb
import pytest

from chaos.checks import END_MARGIN_MS, compare_trades

START = 1_767_614_400_000  # 2026-01-05 12:00 UTC: sim_session's history, where no recorded candle shapes the model
SPAN_MS = 10 * 60_000


@pytest.fixture
def lake_like():
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA silver")
    con.execute("CREATE TABLE silver.trades (exchange VARCHAR, market VARCHAR, trade_id BIGINT, ts TIMESTAMPTZ, "
                "price DOUBLE, volume DOUBLE, side VARCHAR)")
    yield con
    con.close()


def load(con, sim, exchange: str, market: str, start: int, end: int) -> list[dict]:
    """The simulator's trades of [start, end) into silver.trades, as a faithful platform would have them."""
    key = "sequential_id" if exchange == "upbit" else "trade_id"
    truth = sim.ground_truth(market, start, end, exchange=exchange)
    con.executemany("INSERT INTO silver.trades VALUES (?, ?, ?, make_timestamptz(? * 1000), ?, ?, ?)",
                    [(exchange, market, t[key], t["ts"], t["price"], t["volume"], t["side"]) for t in truth])
    return truth


def test_faithful_silver_compares_clean_and_each_kind_of_damage_is_counted(lake_like, sim_session):
    truth = load(lake_like, sim_session, "binance", "BTCUSDT", START, START + SPAN_MS)
    assert len(truth) > 100
    clean = compare_trades(lake_like, sim_session, [("binance", "BTCUSDT")])["binance:BTCUSDT"]
    assert clean["lost"] == clean["extra"] == clean["duplicated"] == clean["mismatched"] == 0
    # the window: strictly after the first trade's millisecond, up to END_MARGIN_MS before the last
    first, last = truth[0]["ts"], truth[-1]["ts"]
    assert clean["truth"] == sum(1 for t in truth if first < t["ts"] <= last - END_MARGIN_MS)

    mid = truth[len(truth) // 2]
    lake_like.execute("DELETE FROM silver.trades WHERE trade_id = ?", [mid["trade_id"]])
    lake_like.execute("INSERT INTO silver.trades SELECT * FROM silver.trades WHERE trade_id = ?",
                      [truth[10]["trade_id"]])
    lake_like.execute("UPDATE silver.trades SET price = price * (1 + 1e-9) WHERE trade_id = ?", [truth[20]["trade_id"]])
    lake_like.execute("UPDATE silver.trades SET side = CASE side WHEN 'buy' THEN 'sell' ELSE 'buy' END "
                      "WHERE trade_id = ?", [truth[30]["trade_id"]])
    lake_like.execute("INSERT INTO silver.trades VALUES ('binance', 'BTCUSDT', -1, make_timestamptz(? * 1000), 1, 1, "
                      "'buy')", [mid["ts"]])
    damaged = compare_trades(lake_like, sim_session, [("binance", "BTCUSDT")])["binance:BTCUSDT"]
    assert damaged["lost"] == 1 and damaged["lost_ids"] == [mid["trade_id"]]
    assert damaged["duplicated"] == 1 and damaged["extra"] == 1
    assert damaged["mismatched"] >= 2  # the 1e-9 price change and the flipped side (a duplicate row compares alike)


def test_a_market_without_trades_in_the_exchange_window_has_nothing_to_lose(lake_like, sim_session):
    # KRW-BTC streamed for ten minutes; KRW-ETH's rows stop after the first minute, as if it had gone quiet. The
    # window is the exchange's (one connection carries both): KRW-ETH is then missing trades, and that is caught.
    load(lake_like, sim_session, "upbit", "KRW-BTC", START, START + SPAN_MS)
    load(lake_like, sim_session, "upbit", "KRW-ETH", START, START + 60_000)
    markets = [("upbit", "KRW-BTC"), ("upbit", "KRW-ETH")]
    entries = compare_trades(lake_like, sim_session, markets)
    assert entries["upbit:KRW-BTC"]["lost"] == 0
    # nine minutes of KRW-ETH's trades (tens a minute) are missing: a market cannot shrink the window around its rows
    assert entries["upbit:KRW-ETH"]["lost"] > 50
    # lost = the window's trades minus silver's rows inside it (the window leaves out its first millisecond, which can
    # hold a KRW-ETH row: the simulator's trades there depend on its random streams)
    start = lake_like.execute("SELECT epoch_ms(min(ts)) FROM silver.trades").fetchone()[0]
    inside = lake_like.execute("SELECT count(*) FROM silver.trades WHERE market = 'KRW-ETH' AND epoch_ms(ts) > ?",
                               [start]).fetchone()[0]
    assert entries["upbit:KRW-ETH"]["lost"] == entries["upbit:KRW-ETH"]["truth"] - inside



def test_a_quiet_market_in_an_empty_minute_is_not_lost(lake_like, sim_session):
    # Upbit has minutes without a trade (the simulator keeps ~3 % of them empty): find one of KRW-ETH's inside a minute
    # where KRW-BTC traded, stream only that minute, and KRW-ETH has nothing to match and nothing lost.
    day = sim_session.ground_truth("KRW-ETH", START, START + 12 * 3600_000, exchange="upbit")
    busy = {t["ts"] // 60_000 for t in day}
    btc = sim_session.ground_truth("KRW-BTC", START, START + 12 * 3600_000, exchange="upbit")
    btc_minutes = {}
    for t in btc:
        btc_minutes.setdefault(t["ts"] // 60_000, []).append(t)
    empty = [m for m in range(START // 60_000 + 1, (START + 12 * 3600_000) // 60_000)
             if m not in busy and len(btc_minutes.get(m, [])) >= 20]
    assert empty, "no empty KRW-ETH minute in 12 hours of history"
    minute = empty[0]
    load(lake_like, sim_session, "upbit", "KRW-BTC", minute * 60_000, (minute + 1) * 60_000)
    entries = compare_trades(lake_like, sim_session, [("upbit", "KRW-BTC"), ("upbit", "KRW-ETH")])
    assert entries["upbit:KRW-BTC"]["lost"] == 0 and entries["upbit:KRW-BTC"]["truth"] > 0
    assert entries["upbit:KRW-ETH"] | {"lost_ids": []} == {
        "silver": 0, "duplicated": 0, "truth": 0, "lost": 0, "extra": 0, "mismatched": 0,
        "window_s": entries["upbit:KRW-BTC"]["window_s"], "lost_ids": []}
