"""Reconciliation: gold.ohlcv_1m_from_trades against the exchange's own REST 1-minute candles.

A minute is compared when it is closed and the stream covered all of it: strictly between the first and the last minute the
market has bars for in the look-back window (the first and last are usually partial), and not inside an open gap.
Open, high, low and close must be equal; volume equal to 1e-9 relative. The check reports the mismatch rate.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb

from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.resources import BinanceResource, UpbitResource
from cryptoflow_dagster.clients.upbit import UpbitClient, candle_start
from cryptoflow_dagster.resources import LakeResource

LOOKBACK = timedelta(hours=2)
VOLUME_RTOL = 1e-9

Bar = tuple[float, float, float, float, float]  # open, high, low, close, volume


@dataclass
class Reconciliation:
    compared: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return len(self.mismatches) / self.compared if self.compared else 0.0


def bar_mismatch(ours: Bar, theirs: Bar | None) -> str | None:
    """Why two bars of one minute disagree, or None when they agree."""
    if theirs is None:
        return "no exchange candle"
    names = ("open", "high", "low", "close")
    for name, a, b in zip(names, ours[:4], theirs[:4]):
        if a != b:
            return f"{name} {a} != {b}"
    if abs(ours[4] - theirs[4]) > VOLUME_RTOL * max(abs(ours[4]), abs(theirs[4])):
        return f"volume {ours[4]} != {theirs[4]}"
    return None


def covered_minutes(con: duckdb.DuckDBPyConnection, now: datetime) -> dict[tuple[str, str], dict[datetime, Bar]]:
    """Our bars of fully covered, closed minutes, per (exchange, market)."""
    rows = con.execute(
        """WITH bars AS (
               SELECT exchange, market, ts, open, high, low, close, volume,
                   min(ts) OVER w AS first_ts, max(ts) OVER w AS last_ts
               FROM gold.ohlcv_1m_from_trades
               WHERE ts >= $since AND ts < date_trunc('minute', $now::TIMESTAMPTZ)
               WINDOW w AS (PARTITION BY exchange, market))
           SELECT b.exchange, b.market, b.ts, b.open, b.high, b.low, b.close, b.volume FROM bars b
           WHERE b.ts > b.first_ts AND b.ts < b.last_ts
             AND NOT EXISTS (SELECT 1 FROM ops.gaps g WHERE g.repaired_at IS NULL AND g.exchange = b.exchange
                             AND g.market = b.market AND b.ts BETWEEN date_trunc('minute', g.gap_start) AND g.gap_end)
           ORDER BY ALL""",
        {"since": now - LOOKBACK, "now": now},
    ).fetchall()
    out: dict[tuple[str, str], dict[datetime, Bar]] = {}
    for exchange, market, ts, *bar in rows:
        out.setdefault((exchange, market), {})[ts] = tuple(bar)
    return out


def upbit_candles(client: UpbitClient, market: str, start: datetime, end: datetime) -> dict[datetime, Bar]:
    bars = {}
    for page in client.candle_pages(market, "1m", start, end):
        for c in page.items:
            bars[candle_start(c)] = (c["opening_price"], c["high_price"], c["low_price"], c["trade_price"],
                                     c["candle_acc_trade_volume"])
    return bars


def binance_candles(client: BinanceClient, symbol: str, start: datetime, end: datetime) -> dict[datetime, Bar]:
    bars = {}
    for page in client.kline_pages(symbol, "1m", start, end):
        for k in page.items:
            ts = datetime.fromtimestamp(int(k[0]) / 1000, timezone.utc)
            bars[ts] = (float(k[1]), float(k[2]), float(k[3]), float(k[4]), float(k[5]))
    return bars


def reconcile(con: duckdb.DuckDBPyConnection, upbit: UpbitClient, binance: BinanceClient, now: datetime) -> Reconciliation:
    result = Reconciliation()
    for (exchange, market), ours in covered_minutes(con, now).items():
        start, end = min(ours), max(ours) + timedelta(minutes=1)
        if exchange == "upbit":
            theirs = upbit_candles(upbit, market, start, end)
        else:
            theirs = binance_candles(binance, market, start, end)
        for ts, bar in ours.items():
            result.compared += 1
            why = bar_mismatch(bar, theirs.get(ts))
            if why:
                result.mismatches.append(f"{exchange}:{market} {ts:%Y-%m-%d %H:%M}: {why}")
    return result


@dg.asset_check(
    asset=dg.AssetKey(["gold", "ohlcv_1m_from_trades"]),
    name="reconciles_with_exchange_candles",
    description="Every closed, fully streamed minute equals the exchange's REST 1-minute candle (OHLC exact, volume 1e-9).",
)
def reconciles_with_exchange_candles(
    lake: LakeResource, upbit: UpbitResource, binance: BinanceResource
) -> dg.AssetCheckResult:
    with lake.connect(read_only=True) as con, upbit.client() as up, binance.client() as bn:
        result = reconcile(con, up, bn, datetime.now(timezone.utc))
    return dg.AssetCheckResult(
        passed=not result.mismatches,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "minutes_compared": result.compared,
            "mismatches": len(result.mismatches),
            "mismatch_rate": result.mismatch_rate,
            "examples": result.mismatches[:10],
        },
    )
