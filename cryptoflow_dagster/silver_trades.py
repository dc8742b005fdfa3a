"""``silver.trades``: typed trade fields out of a message's ``raw_json``, and the one function that writes new trades.

Three writers put trades in silver: the streaming job (a chunk of landing files), gap repair (REST trades) and the day
rebuild (a day of bronze). All of them go through :func:`insert_new`: one row per (exchange, market, trade_id) among
the candidates, the preferred copy of each, none that silver already holds, inside the caller's transaction.

Every trade shape bronze can hold is read by :func:`with_trade_fields`, so one expression set serves them all: the
Binance combined stream (``{"stream":..,"data":{"p","q","m"}}``), a raw Binance stream and aggTrades (``p``, ``q``,
``m``), Binance historicalTrades (``price``, ``qty``, ``isBuyerMaker``), and Upbit WebSocket trades and REST ticks
(``trade_price``, ``trade_volume``, ``ask_bid``). Binance's ``m``/``isBuyerMaker`` true means the buyer was the maker, so
the taker sold; Upbit's ``ASK`` means the taker sold.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

# Candidate fields per trade field, in order of preference: the first one that reads wins.
_PRICE = ("data.p", "p", "price", "trade_price")
_VOLUME = ("data.q", "q", "qty", "trade_volume")
_SIDE = ("data.m", "m", "isBuyerMaker", "ask_bid")


def _shape() -> str:
    """The json_transform target: every candidate field as VARCHAR, nested as in the messages."""
    shape: dict = {}
    for path in _PRICE + _VOLUME + _SIDE:
        *parents, leaf = path.split(".")
        node = shape
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = "VARCHAR"
    return json.dumps(shape, separators=(",", ":"))


# json_transform parses each message once into one struct holding every candidate field. As VARCHAR, a JSON number or
# boolean comes back as its JSON text, a missing key or a non-object parent as NULL, a duplicate key as its first value
# and malformed JSON as an error: what json_extract_string gives, at ~30 % less CPU than a 12-path json_extract_string
# (its list of 12 strings per row). The shape is made of constant field names, so it is safe to format into the SQL.
_SHAPE = _shape()


# The trade fields silver accepts (over ``with_trade_fields``' columns; NULL when a field is missing: wrap in COALESCE).
# isfinite: "nan", "inf" and "1e999" parse as doubles, and NaN > 0 holds in DuckDB.
READABLE = "(price > 0 AND volume >= 0 AND side IS NOT NULL AND isfinite(price) AND isfinite(volume))"


def with_trade_fields(source_sql: str) -> str:
    """``source_sql`` (which has a VARCHAR ``raw_json``) plus typed ``price, volume, side`` (NULL for an unknown shape).

    The JSON is parsed once per row (one json_transform into a struct), not once per field. A consumer that filters on
    ``price``/``volume``/``side`` should read this through a materialized step (a MATERIALIZED CTE, an Arrow table):
    DuckDB pushes such a filter below the projection and would parse every message a second time for it.
    """

    def first_number(paths: tuple[str, ...]) -> str:
        return "COALESCE(" + ", ".join(f"TRY_CAST(_m.{p} AS DOUBLE)" for p in paths) + ")"

    return f"""
        SELECT * EXCLUDE (_m),
            {first_number(_PRICE)} AS price,
            {first_number(_VOLUME)} AS volume,
            CASE COALESCE({", ".join(f"_m.{p}" for p in _SIDE)})
                WHEN 'true' THEN 'sell' WHEN 'false' THEN 'buy' WHEN 'ASK' THEN 'sell' WHEN 'BID' THEN 'buy'
            END AS side
        FROM (SELECT *, json_transform(raw_json, '{_SHAPE}') AS _m FROM ({source_sql}))
    """


COLUMNS = "exchange, market, trade_id, ts, price, volume, quote_volume, side, ingest_time, receive_time, source, day"

# One row per key among the candidates, and only keys bronze holds more than once go through the dedupe window: the
# window sorts every row it sees with all its columns, and most keys arrive once. The keys seen more than once are found
# by a 64-bit hash of the key (one integer to group on instead of three columns); a hash collision only sends a trade
# seen once through the window as well. Measured on one day of 5 M trades: 1.15 CPU-s for the hash groups against 2.8
# for the window over every row (ADR 0013). The key condition goes into the candidates' SQL before ``typed`` turns them
# into trade fields, so each message is parsed once, in the branch its key sends it to.
#
# Readability is ordered on inside the window and filtered on after it. DuckDB pushes a filter below the projections
# it reads through, substituting their expressions: a filter on price/side would cast every price and volume a second
# time (and, below with_trade_fields' projection, parse every message twice). ``random() < 2`` is always true and
# volatile, which DuckDB never pushes down: the filter on ``readable`` stays where the column is already computed
# (~1 s less per 10 M trades than the filter pushed down; ADR 0013).
_KEY_HASH = "hash(exchange, market, trade_id)"
_KEEP_FILTER_ABOVE = "random() < 2"


def new_trades_sql(
    candidates: str,
    *,
    prefer: str,
    typed: Callable[[str], str] | None = None,
    look_in_silver: bool = True,
    extra: str = "",
) -> str:
    """A SELECT of silver.trades rows (its columns in order, then ``extra``): one per (exchange, market, trade_id) of
    ``candidates``, the first readable copy by ``prefer``, leaving out keys whose copies are all unreadable and, with
    ``look_in_silver``, keys silver holds with a trade time between ``$silver_from`` and ``$silver_to``. ``$now`` is
    their ingest_time. See :func:`insert_new` for what ``candidates`` and ``typed`` give."""
    typed = typed or (lambda rows: rows)
    known = (
        """ANTI JOIN (SELECT exchange, market, trade_id FROM silver.trades
                     WHERE ts BETWEEN $silver_from AND $silver_to
                         AND day BETWEEN CAST($silver_from AS DATE) AND CAST($silver_to AS DATE)) s
               ON s.exchange = n.exchange AND s.market = n.market AND s.trade_id = n.trade_id"""
        if look_in_silver else ""
    )
    return f"""
        WITH repeated AS MATERIALIZED (SELECT {_KEY_HASH} AS h FROM ({candidates}) GROUP BY h HAVING count(*) > 1)
        SELECT n.exchange, n.market, n.trade_id, n.event_time AS ts, n.price, n.volume, n.price * n.volume AS quote_volume,
            n.side, $now AS ingest_time, n.receive_time, n.source, n.day{extra}
        FROM (
            SELECT * REPLACE (readable AND {_KEEP_FILTER_ABOVE} AS readable)
            FROM ({typed(f"SELECT * FROM ({candidates}) WHERE {_KEY_HASH} NOT IN (SELECT h FROM repeated)")})
            UNION ALL
            ({typed(f"SELECT * FROM ({candidates}) WHERE {_KEY_HASH} IN (SELECT h FROM repeated)")}
             QUALIFY row_number() OVER (PARTITION BY exchange, market, trade_id ORDER BY readable DESC, {prefer}) = 1)
        ) n
        {known}
        WHERE n.readable
    """


def insert_new(
    con: duckdb.DuckDBPyConnection,
    candidates: str,
    *,
    now: datetime,
    prefer: str,
    look_in_silver: bool,
    params: dict[str, Any] | None = None,
    typed: Callable[[str], str] | None = None,
    count_by: str | None = None,
) -> Any:
    """Insert into silver.trades the new trades among ``candidates``, inside the caller's transaction; return how many
    (or, with ``count_by``, how many per value of that candidate column).

    ``candidates`` is a SELECT (its ``$`` parameters in ``params``) of rows with ``exchange, market, trade_id`` and,
    after ``typed`` (given SQL of some of those rows, SQL of the same rows with more columns; none: they have them
    already), ``event_time, price, volume, side, receive_time, source, day`` and ``readable`` (false: silver cannot read
    this copy). Per (exchange, market, trade_id) the first readable copy by ``prefer`` (an ORDER BY list over those
    columns) is inserted, with ``now`` as its ingest_time, unless ``look_in_silver`` and silver holds the key already
    (not looking: a day rebuild, which has just deleted the day it replaces).

    Silver is looked in only between the earliest and the latest trade time among the candidates: a trade's time is
    part of the trade and never changes, so any copy silver holds has a time in that range. DuckLake skips every data
    file whose ``ts`` statistics fall outside it, so the cost of a streaming chunk's dedupe follows the chunk (about a
    second of trades), not the size of the day it lands in (issue 16; BENCHMARKS.md, "a day of micro-batches").
    """
    if count_by is not None and not count_by.isidentifier():
        raise ValueError(f"count_by must be a column name, not {count_by!r}")
    params = dict(params or {})
    if look_in_silver:
        # as constants: a bound the scan can prune files with (a subquery would be evaluated after the scan is planned)
        params["silver_from"], params["silver_to"] = con.execute(
            f"SELECT min(event_time), max(event_time) FROM ({candidates})", params
        ).fetchone()
        if params["silver_from"] is None:  # no candidate has a trade time: nothing to insert
            return 0 if count_by is None else {}
    params["now"] = now
    new = new_trades_sql(candidates, prefer=prefer, typed=typed, look_in_silver=look_in_silver,
                         extra=f", n.{count_by}" if count_by else "")
    if count_by is None:
        return con.execute(f"INSERT INTO silver.trades ({COLUMNS}) {new}", params).fetchone()[0]
    # The count per group needs the rows, and DuckLake has no INSERT ... RETURNING: they are computed once, then
    # inserted and counted.
    con.register("_new_trades", con.execute(new, params).to_arrow_table())
    try:
        con.execute(f"INSERT INTO silver.trades ({COLUMNS}) SELECT {COLUMNS} FROM _new_trades")
        return dict(con.execute(f"SELECT {count_by}, count(*) FROM _new_trades GROUP BY ALL").fetchall())
    finally:
        con.unregister("_new_trades")
