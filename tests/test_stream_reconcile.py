"""Reconciliation of gold.ohlcv_1m_from_trades with the exchange's REST candles (the simulator's), and its comparison rule."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import dagster as dg

from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_dagster.clients.resources import BinanceResource, UpbitResource
from cryptoflow_dagster.defs.streaming.jobs import single_pass, streaming_ingest_job
from cryptoflow_dagster.defs.gold.intraday import intraday_gold_assets
from cryptoflow_dagster.defs.streaming.reconcile import bar_mismatch, reconciles_with_exchange_candles
from cryptoflow_dagster.resources import LakeResource, build_resources
from exchange_sim.testing import running_sim
from streaming_sensor.batches import MicroBatcher


def test_bar_comparison_rule():
    bar = (100.0, 110.0, 90.0, 105.0, 1.5)
    assert bar_mismatch(bar, bar) is None
    assert bar_mismatch(bar, (100.0, 110.0, 90.0, 105.0, 1.5 * (1 + 1e-12))) is None  # volume to 1e-9 relative
    assert bar_mismatch(bar, (100.0, 110.0, 90.0, 105.0, 1.5 * (1 + 1e-6))).startswith("volume")
    assert bar_mismatch(bar, (100.0, 110.0, 90.0, 105.5, 1.5)).startswith("close")  # prices exact
    assert bar_mismatch(bar, None) == "no exchange candle"


def frame(exchange: str, market: str, t: dict) -> bytes:
    """The trade as the exchange's WebSocket would send it (values from the simulator's ground truth)."""
    if exchange == "upbit":
        return json.dumps({"type": "trade", "code": market, "trade_timestamp": t["ts"], "trade_price": t["price"],
                           "trade_volume": t["volume"], "ask_bid": "BID" if t["side"] == "buy" else "ASK",
                           "sequential_id": t["sequential_id"], "stream_type": "REALTIME"}).encode()
    data = {"e": "trade", "E": t["ts"], "s": market, "t": t["trade_id"], "p": repr(t["price"]), "q": repr(t["volume"]),
            "T": t["ts"], "m": t["side"] == "sell", "M": True}
    return json.dumps({"stream": f"{market.lower()}@trade", "data": data}).encode()


def test_gold_bars_reconcile_with_exchange_candles_and_a_lost_trade_is_caught(settings, monkeypatch, dagster_instance):
    with running_sim(upbit_markets=["KRW-BTC"], binance_symbols=["BTCUSDT"], trade_rate=1) as sim:
        for key, value in sim.env().items():
            monkeypatch.setenv(key, value)
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        start, end = now - timedelta(minutes=9), now - timedelta(minutes=3)
        batcher = MicroBatcher(settings.landing_dir, "0123456789abcdef", settings.home / "spill")
        # The simulator's history follows real recorded minutes, some of them without a trade: the minutes to compare
        # are those with trades, less each market's first and last (the check leaves partly covered ones out).
        expected_minutes = 0
        for exchange, market in (("upbit", "KRW-BTC"), ("binance", "BTCUSDT")):
            truth = sim.ground_truth(market, start, end, exchange=exchange)
            expected_minutes += len({t["ts"] // 60_000 for t in truth}) - 2
            for t in truth:
                tid = t.get("sequential_id", t.get("trade_id"))
                batcher.add(exchange, "trade", market, tid, t["ts"], int(time.time() * 1e6), "s", frame(exchange, market, t), None)
        batcher.flush()
        instance = dagster_instance
        assert streaming_ingest_job.execute_in_process(run_config=single_pass(), instance=instance, resources=build_resources()).success

        resources = {"lake": LakeResource(), "upbit": UpbitResource(), "binance": BinanceResource()}
        result = reconciles_with_exchange_candles(**resources)
        assert result.passed, result.metadata
        assert expected_minutes >= 6  # most of the 6 minutes per market traded
        assert result.metadata["minutes_compared"].value == expected_minutes
        assert result.metadata["mismatch_rate"].value == 0.0

        # lose one trade in the middle of the window, rebuild gold for the day: the check sees it
        with lake.session(settings) as con:
            con.execute("DELETE FROM silver.trades WHERE market = 'BTCUSDT' AND ts = "
                        "(SELECT max(ts) FROM silver.trades WHERE market = 'BTCUSDT' AND ts < ?)",
                        [start + timedelta(minutes=3, seconds=30)])
        for day in sorted({start.date(), end.date()}):  # the streaming partitions include today
            assert dg.materialize([intraday_gold_assets(load_settings())], partition_key=day.isoformat(),
                                  resources=build_resources(), instance=instance).success
        result = reconciles_with_exchange_candles(**resources)
        assert not result.passed
        assert result.metadata["mismatches"].value >= 1
        assert 0 < result.metadata["mismatch_rate"].value < 1
