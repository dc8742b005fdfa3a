"""Every market (issue 17): market selectors resolved from the exchange, several connections per exchange, and a few
dozen markets from the simulator through the sidecar into silver with nothing lost or doubled."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from cryptoflow_core import market_list
from cryptoflow_core.heartbeat import read_heartbeat
from cryptoflow_core.settings import SettingsError, load_settings, market_selector
from exchange_sim.testing import running_sim
from tests.test_stream_e2e import assert_matches_ground_truth, ingest, sidecar, stream_until

UPBIT_KRW = tuple(f"KRW-{a}" for a in ("BTC", "ETH", "XRP", "SOL", "USDT", "ADA", "DOGE", "TRX", "LINK", "DOT", "AVAX",
                                        "SUI", "NEAR", "ATOM", "ETC", "BCH", "AAVE", "UNI", "SEI", "HBAR"))
BINANCE_USDT = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "ADAUSDT", "DOGEUSDT", "TRXUSDT", "LINKUSDT", "DOTUSDT",
                "AVAXUSDT", "SUIUSDT", "NEARUSDT")


@pytest.mark.parametrize("exchange, value, selector", [
    ("upbit", "ALL", "ALL"), ("upbit", "all", "ALL"), ("binance", "TOP50", "TOP50"), ("binance", "top7", "TOP7"),
    ("binance", "ALL", "ALL"), ("upbit", "KRW-BTC", None), ("binance", "BTCUSDT,ETHUSDT", None),
])
def test_a_market_setting_is_a_list_or_a_selector(exchange, value, selector):
    env = {"CRYPTOFLOW_UPBIT_MARKETS" if exchange == "upbit" else "CRYPTOFLOW_BINANCE_SYMBOLS": value}
    settings = load_settings(env)
    assert market_selector(exchange, market_list.setting_values(settings, exchange)) == selector


@pytest.mark.parametrize("env, error", [
    ({"CRYPTOFLOW_UPBIT_MARKETS": "TOP50"}, "invalid Upbit market code 'TOP50'"),  # TOP<n> is Binance's
    ({"CRYPTOFLOW_UPBIT_MARKETS": "ALL,KRW-BTC"}, "invalid Upbit market code 'ALL'"),  # a selector stands alone
    ({"CRYPTOFLOW_STREAM_MARKETS_PER_CONNECTION": "0"}, "CRYPTOFLOW_STREAM_MARKETS_PER_CONNECTION"),
])
def test_a_bad_selector_is_refused(env, error):
    # (Binance "TOP0" or "ALLX" are well-formed symbols: the exchange, not the setting, says they do not exist)
    with pytest.raises(SettingsError, match=error):
        load_settings(env)


def test_selectors_resolve_from_the_exchanges_rest_with_retries(settings):
    # a BTC- market and a non-USDT symbol are listed too: ALL means KRW- markets, TOPn USDT symbols; the first two
    # REST answers are 429s, which the resolution waits out
    with running_sim(upbit_markets=[*UPBIT_KRW[:6], "BTC-ETH"], binance_symbols=[*BINANCE_USDT[:5], "ETHBTC"],
                     faults={"rest_429_burst": 2}) as sim:
        env = {**sim.env(), "CRYPTOFLOW_HOME": str(settings.home), "CRYPTOFLOW_UPBIT_MARKETS": "ALL",
               "CRYPTOFLOW_BINANCE_SYMBOLS": "TOP3"}
        s = load_settings(env)
        upbit = market_list.configured_markets(s, "upbit")
        binance = market_list.configured_markets(s, "binance")
        assert upbit == tuple(sorted(UPBIT_KRW[:6]))
        assert len(binance) == 3 and set(binance) <= set(BINANCE_USDT[:5])
        ranked = httpx.get(f"{sim.url}/api/v3/ticker/24hr", timeout=10)
        if ranked.status_code == 200:  # the exchange's own ranking is the reference, where it serves one
            volume = {r["symbol"]: float(r["quoteVolume"]) for r in ranked.json() if r["symbol"].endswith("USDT")}
            assert list(binance) == sorted(volume, key=lambda k: (-volume[k], k))[:3]
        else:  # without the endpoint: exchangeInfo's order
            info = httpx.get(f"{sim.url}/api/v3/exchangeInfo", timeout=10).json()["symbols"]
            assert list(binance) == [i["symbol"] for i in info if i["quoteAsset"] == "USDT"][:3]
    # the lists were written beside the heartbeat: read back without the exchange (it is stopped)
    assert market_list.configured_markets(s, "upbit") == upbit
    assert market_list.configured_markets(s, "binance") == binance
    # a list resolved for another selector is not taken for this one
    other = load_settings({**env, "CRYPTOFLOW_BINANCE_SYMBOLS": "TOP2"})
    assert market_list.configured_markets(other, "binance", resolve_missing=False) == ()


def test_an_unreachable_exchange_is_a_clear_error(settings):
    s = load_settings({"CRYPTOFLOW_HOME": str(settings.home), "CRYPTOFLOW_UPBIT_MARKETS": "ALL",
                       "CRYPTOFLOW_UPBIT_REST_URL": "http://127.0.0.1:9"})
    with pytest.raises(market_list.MarketListError, match="could not resolve upbit markets ALL"):
        market_list.resolve(s, "upbit", "ALL", attempts=2)


def test_a_tampered_list_file_is_not_trusted(settings):
    market_list.write_list(settings.landing_dir, "upbit", "ALL", ("KRW-BTC",))
    path = market_list.list_path(settings.landing_dir, "upbit")
    path.write_text('{"selector": "ALL", "markets": ["KRW-BTC", "x\'; DROP TABLE t"]}')
    assert market_list.read_list(settings.landing_dir, "upbit") is None


def test_every_market_of_a_few_dozen_streams_into_silver_exactly_once(settings, dagster_instance, monkeypatch):
    """32 markets resolved from the simulator (ALL, TOP12) over 5 connections (8 markets each at most): silver equals
    the exchange's trades in every one of them."""
    with running_sim(trade_rate=2, upbit_markets=list(UPBIT_KRW), binance_symbols=list(BINANCE_USDT)) as sim:
        env = {**sim.env(), "CRYPTOFLOW_UPBIT_MARKETS": "ALL", "CRYPTOFLOW_BINANCE_SYMBOLS": "TOP12",
               "CRYPTOFLOW_STREAM_MARKETS_PER_CONNECTION": "8"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        proc = sidecar()
        # ~100 trades/s over 32 markets (Upbit tickers besides): 1,500 messages is ~10 s of stream
        stream_until(proc, settings, 1500, timeout_s=90)
        # and every connection delivered (on a loaded machine one may still be in its first backoff)
        deadline = time.monotonic() + 60
        while not _all_delivered(read_heartbeat(settings.heartbeat_path), 5) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

        beat = read_heartbeat(settings.heartbeat_path)
        assert sorted(beat["streams"]) == ["binance", "binance:2", "upbit", "upbit:2", "upbit:3"]
        assert _all_delivered(beat, 5), {k: (s["messages"], s["connected_since"], s["reconnects"])
                                         for k, s in beat["streams"].items()}
        s = load_settings()
        upbit = market_list.configured_markets(s, "upbit", resolve_missing=False)
        binance = market_list.configured_markets(s, "binance", resolve_missing=False)
        assert set(upbit) == set(UPBIT_KRW) and set(binance) == set(BINANCE_USDT)
        assert "upbit markets ALL resolved to 20" in err and "binance markets TOP12 resolved to 12" in err

        ingest(dagster_instance)
        # one comparison per connection: each has its own streamed window (they open 0.25 s apart)
        counted = {}
        for exchange, markets in (("upbit", upbit), ("binance", binance)):
            for first in range(0, len(markets), 8):
                group = [(exchange, m) for m in markets[first:first + 8]]
                counted |= assert_matches_ground_truth(sim, settings, group)
        assert len(counted) == 32 and sum(1 for n in counted.values() if n) >= 28, counted


def _all_delivered(beat: dict | None, connections: int) -> bool:
    streams = (beat or {}).get("streams", {})
    return len(streams) == connections and all(s["messages"] > 0 for s in streams.values())


def test_gaps_on_many_markets_at_once_are_repaired_over_budgeted_passes_oldest_first(settings, monkeypatch):
    """A reconnect on a dozen Upbit markets opens a window per market: each pass fetches until its budget is spent
    (here: one gap), the rest stay open in order, and after enough passes silver holds every trade the exchange made in
    the windows, once."""
    from contextlib import closing
    from datetime import datetime, timedelta, timezone

    from cryptoflow_core.heartbeat import record_gap
    from cryptoflow_dagster import lake
    from cryptoflow_dagster.clients.upbit import UpbitClient
    from cryptoflow_dagster.streaming.gaps import detect_and_repair, open_gaps

    markets = UPBIT_KRW[:12]
    with running_sim(trade_rate=2, upbit_markets=list(markets)) as sim:
        end = datetime.now(timezone.utc) - timedelta(seconds=5)
        # two reconnect windows, the older first: its gaps are repaired first
        record_gap(settings.landing_dir, "upbit", markets[:6], (end - timedelta(seconds=40)).timestamp(),
                   (end - timedelta(seconds=25)).timestamp(), "disconnect", "session-a")
        record_gap(settings.landing_dir, "upbit", markets[6:], (end - timedelta(seconds=20)).timestamp(),
                   end.timestamp(), "disconnect", "session-b")
        clock = iter(range(10**6))  # each look at the clock is a second later: a 0.5 s budget fetches one gap
        with lake.session(settings) as con, \
                closing(UpbitClient(sim.upbit_rest_url, lock_dir=settings.home / "locks")) as up:
            lake.ensure_schema(con)
            for left in range(11, -1, -1):
                report = detect_and_repair(con, settings.landing_dir, up, None, "run", budget_s=0.5,
                                           clock=lambda: float(next(clock)))
                assert (report.repaired, report.failed, report.deferred) == (1, 0, left)
                assert len(open_gaps(con)) == left
            # the older window's gaps first: in the order they were repaired, window starts never go back
            starts = [r[0] for r in con.execute("SELECT gap_start FROM ops.gaps ORDER BY repaired_at").fetchall()]
            assert starts == sorted(starts) and len(starts) == 12
            silver = {m: con.execute("SELECT trade_id FROM silver.trades WHERE market = ?", [m]).fetchall()
                      for m in markets}
        windows = [(end - timedelta(seconds=40), end - timedelta(seconds=25))] * 6 + [(end - timedelta(seconds=20), end)] * 6
        truth = {m: {t["sequential_id"] for t in sim.ground_truth(m, lo, hi, exchange="upbit")}
                 for m, (lo, hi) in zip(markets, windows)}
    assert sum(map(len, truth.values())) > 50
    for m in markets:
        ids = [r[0] for r in silver[m]]
        assert len(ids) == len(set(ids)), f"{m}: duplicated trades"
        assert truth[m] <= set(ids), f"{m} lost {len(truth[m] - set(ids))} of {len(truth[m])} trades in its window"
