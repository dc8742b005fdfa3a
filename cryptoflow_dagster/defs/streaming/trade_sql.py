"""SQL shared by the streaming job, the daily rebuild and gap repair: typed trade fields out of ``raw_json``.

Every trade shape bronze can hold is read here, so one expression set serves them all: the Binance combined stream
(``{"stream":..,"data":{"p","q","m"}}``), a raw Binance stream and aggTrades (``p``, ``q``, ``m``), Binance
historicalTrades (``price``, ``qty``, ``isBuyerMaker``), and Upbit WebSocket trades and REST ticks
(``trade_price``, ``trade_volume``, ``ask_bid``). Binance's ``m``/``isBuyerMaker`` true means the buyer was the maker, so
the taker sold; Upbit's ``ASK`` means the taker sold.
"""

from __future__ import annotations

import json

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
