"""Gap detection and repair for the trade stream.

- Binance trade ids are contiguous per symbol: a missing id in silver.trades is a gap, filled by id from historicalTrades.
- Upbit sequential ids are not contiguous, so Upbit gaps are time windows: the sidecar records a disconnect (or its own
  downtime, seen in the previous heartbeat) as a gap candidate; repair pages /v1/trades/ticks back over the window.

Each gap is one ``ops.gaps`` row (found when, repaired when, how many rows came back). Repaired trades enter bronze with
``source = 'rest'`` and silver through the same typed SQL and anti-join as streamed ones, and the touched minutes of gold are
recomputed, all in one transaction with the ``ops.gaps`` update: a repair is never half-applied, and repeating it is harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import duckdb

from cryptoflow_dagster import dead_letters, lake, silver_trades
from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.upbit import UpbitClient
from cryptoflow_dagster.streaming import intraday_gold
from cryptoflow_dagster.silver_trades import READABLE, with_trade_fields
from cryptoflow_core.heartbeat import read_gap_candidates

log = logging.getLogger(__name__)

UPBIT_TICK_DAYS = 7  # Upbit serves ticks for the last 7 days only
SCAN_DAYS = 2  # id gaps are looked for in the most recent days of silver
# A trade stamped just before the last message of a dropped connection may still have been in flight: widen the window.
WINDOW_MARGIN = timedelta(seconds=5)


@dataclass(frozen=True)
class Gap:
    gap_id: str
    exchange: str
    market: str
    kind: str  # trade_ids | window
    gap_start: datetime
    gap_end: datetime
    first_missing_id: int | None = None
    last_missing_id: int | None = None


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def binance_id_gaps(con: duckdb.DuckDBPyConnection, today: date) -> list[Gap]:
    rows = con.execute(
        """SELECT market, trade_id + 1, next_id - 1, ts, next_ts FROM (
               SELECT market, trade_id, ts, lead(trade_id) OVER w AS next_id, lead(ts) OVER w AS next_ts
               FROM silver.trades WHERE exchange = 'binance' AND day >= ?
               WINDOW w AS (PARTITION BY market ORDER BY trade_id))
           WHERE next_id > trade_id + 1""",
        [today - timedelta(days=SCAN_DAYS - 1)],
    ).fetchall()
    return [Gap(f"binance:{m}:{a}-{b}", "binance", m, "trade_ids", s, e, a, b) for m, a, b, s, e in rows]


def upbit_window_gaps(landing: Path) -> list[Gap]:
    gaps = []
    for c in read_gap_candidates(landing):
        if c.get("exchange") != "upbit":
            continue  # Binance windows show up as id gaps, which are exact
        for market in c.get("markets", []):
            start, end = _ts(c["start"]) - WINDOW_MARGIN, _ts(c["end"]) + WINDOW_MARGIN
            gaps.append(Gap(f"upbit:{market}:{c['start']}:{c['end']}", "upbit", market, "window", start, end))
    return gaps


def record_gaps(con: duckdb.DuckDBPyConnection, gaps: list[Gap], now: datetime) -> int:
    """Add gaps ``ops.gaps`` does not know yet (by gap_id). Returns how many were new."""
    if not gaps:
        return 0
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    frame = pa.table(
        {
            "gap_id": [g.gap_id for g in gaps], "exchange": [g.exchange for g in gaps], "market": [g.market for g in gaps],
            "kind": [g.kind for g in gaps], "gap_start": [g.gap_start for g in gaps], "gap_end": [g.gap_end for g in gaps],
            "first_missing_id": pa.array([g.first_missing_id for g in gaps], pa.int64()),
            "last_missing_id": pa.array([g.last_missing_id for g in gaps], pa.int64()),
        }
    )
    con.register("_gaps", frame)
    try:
        return lake.write(
            con,
            lambda c: c.execute(
                """INSERT INTO ops.gaps (exchange, market, gap_start, gap_end, detected_at, gap_id, kind, first_missing_id,
                       last_missing_id)
                   SELECT DISTINCT n.exchange, n.market, n.gap_start, n.gap_end, $now, n.gap_id, n.kind, n.first_missing_id,
                       n.last_missing_id
                   FROM _gaps n ANTI JOIN ops.gaps g ON g.gap_id = n.gap_id""",
                {"now": now},
            ).fetchone()[0],
        )
    finally:
        con.unregister("_gaps")


def open_gaps(con: duckdb.DuckDBPyConnection) -> list[Gap]:
    rows = con.execute(
        """SELECT gap_id, exchange, market, kind, gap_start, gap_end, first_missing_id, last_missing_id
           FROM ops.gaps WHERE repaired_at IS NULL ORDER BY detected_at, gap_start, gap_id"""
    ).fetchall()
    return [Gap(*r) for r in rows]


def fetch_binance(client: BinanceClient, gap: Gap) -> list[str]:
    return [raw for page in client.trades_between_ids(gap.market, gap.first_missing_id, gap.last_missing_id) for raw in page.raw]


def fetch_upbit(client: UpbitClient, gap: Gap, today: date) -> list[str]:
    since_ms = int(gap.gap_start.timestamp() * 1000)
    until_ms = int(gap.gap_end.timestamp() * 1000) + 1
    days_back = (today - gap.gap_end.date()).days
    raws: list[str] = []
    for page in client.trade_tick_pages(gap.market, since_ms=since_ms, until_ms=until_ms,
                                        days_ago=days_back if days_back > 0 else None):
        raws.extend(page.raw)
    return raws


_REST_ROWS = with_trade_fields(
    """SELECT gap_id, exchange, market, raw_json,
           CAST(COALESCE(json_extract_string(raw_json, '$.id'), json_extract_string(raw_json, '$.sequential_id')) AS BIGINT)
               AS trade_id,
           make_timestamp(CAST(COALESCE(json_extract_string(raw_json, '$.time'), json_extract_string(raw_json, '$.timestamp'))
               AS BIGINT) * 1000)::TIMESTAMPTZ AS event_time
       FROM _rest"""
)


_FIELDS_READ = f"trade_id IS NOT NULL AND event_time IS NOT NULL AND {READABLE}"

# The REST trades silver can read, as silver_trades.insert_new takes them, and those it cannot, as dead letters.
_NEW_TRADES = f"""
    SELECT gap_id, exchange, market, trade_id, event_time, price, volume, side, NULL::TIMESTAMPTZ AS receive_time,
        'rest' AS source, CAST(event_time AS DATE) AS day, true AS readable
    FROM _typed WHERE {_FIELDS_READ}
"""
_UNREADABLE = f"""
    SELECT $now AS received_at, gap_id AS batch_file, encode(raw_json) AS raw,
        'unreadable trade id, time, price, volume or side' AS error, exchange, market, CAST($now AS DATE) AS day
    FROM _typed WHERE NOT COALESCE({_FIELDS_READ}, false)
"""


def apply_repairs(
    con: duckdb.DuckDBPyConnection, fetched: list[tuple[Gap, list[str]]], run_id: str | None, now: datetime
) -> dict[str, int]:
    """Write the REST trades of the ``fetched`` gaps to bronze, silver and gold and close the gaps, in one transaction.

    Returns, per gap id, how many trades silver did not have yet (its ``repaired_rows``).
    """
    if not fetched:
        return {}
    import pyarrow as pa  # on first use, not at import: loading the code location does not need it

    rest = pa.table(
        {
            "gap_id": [g.gap_id for g, raws in fetched for _ in raws],
            "exchange": [g.exchange for g, raws in fetched for _ in raws],
            "market": [g.market for g, raws in fetched for _ in raws],
            "raw_json": pa.array([r for _, raws in fetched for r in raws], pa.string()),
        }
    )
    con.register("_rest", rest)
    typed = con.execute(_REST_ROWS).to_arrow_table()
    con.register("_typed", typed)
    con.register(intraday_gold.RANGES, con.execute(
        "SELECT exchange, market, min(date_trunc('minute', event_time)) AS lo, max(date_trunc('minute', event_time)) AS hi "
        "FROM _typed WHERE event_time IS NOT NULL GROUP BY ALL").to_arrow_table())
    gap_ids = [g.gap_id for g, _ in fetched]

    def work(c: duckdb.DuckDBPyConnection) -> dict[str, int]:
        c.execute(
            """INSERT INTO bronze.trades_raw (exchange, market, trade_id, event_time, raw_json, unique_key, ingest_time,
                   ingest_run_id, source, batch_file, day)
               SELECT exchange, market, trade_id, event_time, raw_json, exchange || ':' || market || ':' || trade_id, $now,
                   $run, 'rest', gap_id, CAST(event_time AS DATE)
               FROM _typed t
               -- bronze is append-only, but repeating a gap's repair adds nothing
               ANTI JOIN (SELECT batch_file, trade_id FROM bronze.trades_raw
                          WHERE source = 'rest' AND batch_file IN (SELECT unnest($gaps))) b
                   ON b.batch_file = t.gap_id AND b.trade_id = t.trade_id
               WHERE t.trade_id IS NOT NULL AND t.event_time IS NOT NULL""",
            {"now": now, "run": run_id, "gaps": gap_ids},
        )
        # A REST trade silver cannot read is a dead letter (kept verbatim in bronze too); once per gap and message,
        # so a repeated repair adds none.
        dead_letters.insert(c, _UNREADABLE, params={"now": now}, source="rest_trades", run_id=run_id,
                            once_per_batch=True)
        # one row per trade (the first gap's when gaps overlap), counted per gap
        counts = silver_trades.insert_new(c, _NEW_TRADES, now=now, prefer="gap_id", look_in_silver=True,
                                          count_by="gap_id")
        intraday_gold.refresh(c, now)
        c.register("_repaired", pa.table({"gap_id": gap_ids, "n": pa.array([counts.get(g, 0) for g in gap_ids], pa.int64())}))
        c.execute(
            # only open gaps: applying a closed gap's answer again must not overwrite when and how it was repaired
            "UPDATE ops.gaps SET repaired_at = $now, repaired_rows = r.n FROM _repaired r "
            "WHERE ops.gaps.gap_id = r.gap_id AND ops.gaps.repaired_at IS NULL",
            {"now": now},
        )
        return {g: counts.get(g, 0) for g in gap_ids}

    try:
        return lake.write(con, work)
    finally:
        for name in ("_rest", "_typed", "_repaired", intraday_gold.RANGES):
            try:
                con.unregister(name)
            except duckdb.Error:
                pass


@dataclass
class RepairReport:
    detected: int = 0
    repaired: int = 0
    rows: int = 0
    failed: int = 0
    deferred: int = 0  # open gaps left for the next pass (the pass's fetch budget was spent)


def detect_and_repair(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    upbit: UpbitClient | None,
    binance: BinanceClient | None,
    run_id: str | None = None,
    now: datetime | None = None,
    budget_s: float | None = None,
    clock=time.monotonic,
) -> RepairReport:
    """Record new gaps, fetch open ones over REST (the oldest first) and apply them in one transaction.

    ``budget_s``: fetching stops starting new gaps after this long (one is always fetched); the rest stay open, the
    oldest window first, for the next pass.
    After a reconnect on a few hundred markets every one has a gap (an Upbit window per market): at Upbit's 10 requests
    a second, fetching them all in one pass would hold the streaming run (whose loop runs the pass) for minutes.
    """
    now = now or datetime.now(timezone.utc)
    today = now.date()
    report = RepairReport()
    report.detected = record_gaps(con, binance_id_gaps(con, today) + upbit_window_gaps(landing), now)
    fetched: list[tuple[Gap, list[str]]] = []
    deadline = None if not budget_s else clock() + budget_s
    for gap in open_gaps(con):
        if gap.exchange == "upbit" and (today - gap.gap_end.date()).days > UPBIT_TICK_DAYS:
            continue  # out of Upbit's reach; stays open and the asset check reports it
        # at least one gap per pass, whatever the budget: the oldest always progresses
        if deadline is not None and (fetched or report.failed) and clock() >= deadline:
            report.deferred += 1
            continue
        try:
            if gap.exchange == "binance" and binance is not None:
                fetched.append((gap, fetch_binance(binance, gap)))
            elif gap.exchange == "upbit" and upbit is not None:
                fetched.append((gap, fetch_upbit(upbit, gap, today)))
        except Exception as exc:  # one exchange failing must not stop the other's repairs; the gap stays open
            report.failed += 1
            log.warning("fetching %s failed: %s", gap.gap_id, exc)
    # One transaction for every fetched gap: gold is recomputed once, and a crash leaves all of them open to retry.
    rows = apply_repairs(con, fetched, run_id, now)
    report.repaired, report.rows = len(rows), sum(rows.values())
    return report
