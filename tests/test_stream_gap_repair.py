"""Gap repair's write step: REST trades enter bronze verbatim, silver once, and what silver cannot read is a dead letter."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from cryptoflow_dagster import lake
from cryptoflow_dagster.streaming.gaps import Gap, apply_repairs, open_gaps, record_gaps

T0 = datetime(2025, 9, 1, 12, 0, tzinfo=timezone.utc)


def binance_rest(trade_id: int, price: str, qty: str = "0.5") -> str:
    """A trade as Binance's /api/v3/historicalTrades answers it (docs/exchange-apis.md)."""
    ms = int((T0 + timedelta(seconds=trade_id)).timestamp() * 1000)
    return json.dumps({"id": trade_id, "price": price, "qty": qty, "quoteQty": "1", "time": ms,
                       "isBuyerMaker": trade_id % 2 == 0, "isBestMatch": True}, separators=(",", ":"))


def test_repair_dead_letters_unreadable_rest_trades_once_and_lands_the_rest_once(settings):
    gap = Gap("binance:BTCUSDT:ids:101-104", "binance", "BTCUSDT", "trade_ids", T0, T0 + timedelta(seconds=5), 101, 104)
    answer = [binance_rest(101, "60000.5"), binance_rest(102, "inf"), binance_rest(103, "NaN"),
              binance_rest(104, "60001.0", qty="-1"), binance_rest(101, "60000.5")]  # 101 twice: pages overlap
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        record_gaps(con, [gap], T0)
        assert apply_repairs(con, [(gap, answer)], "run-1", T0 + timedelta(minutes=1)) == {gap.gap_id: 1}
        # the same answer again (a retried run): nothing new anywhere
        apply_repairs(con, [(gap, answer)], "run-2", T0 + timedelta(minutes=2))
        silver = con.execute("SELECT trade_id, price, volume, side, source FROM silver.trades").fetchall()
        dead = con.execute("SELECT source, batch_file, decode(raw), error FROM bronze.dead_letters "
                           "ORDER BY 3").fetchall()
        bronze = con.execute("SELECT count(*) FROM bronze.trades_raw WHERE source = 'rest'").fetchone()[0]
        repaired = con.execute("SELECT repaired_rows FROM ops.gaps WHERE gap_id = ?", [gap.gap_id]).fetchone()
        still_open = open_gaps(con)
    assert silver == [(101, 60000.5, 0.5, "buy", "rest")]
    # inf and NaN parse as doubles; a negative quantity is no volume: each a dead letter, verbatim, once
    assert [(s, b, e) for s, b, _, e in dead] == [
        ("rest_trades", gap.gap_id, "unreadable trade id, time, price, volume or side")] * 3
    assert sorted(r for _, _, r, _ in dead) == sorted(answer[1:4])
    assert bronze == 5  # every message the exchange sent, verbatim (the overlap's copy too), once despite the retry
    assert repaired == (1,) and still_open == []
