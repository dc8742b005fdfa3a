"""SQL shared by the streaming job, the daily rebuild and gap repair: typed trade fields out of ``raw_json``.

Every trade shape bronze can hold is read here, so one expression set serves them all: the Binance combined stream
(``{"stream":..,"data":{"p","q","m"}}``), a raw Binance stream and aggTrades (``p``, ``q``, ``m``), Binance
historicalTrades (``price``, ``qty``, ``isBuyerMaker``), and Upbit WebSocket trades and REST ticks
(``trade_price``, ``trade_volume``, ``ask_bid``). Binance's ``m``/``isBuyerMaker`` true means the buyer was the maker, so
the taker sold; Upbit's ``ASK`` means the taker sold.
"""

from __future__ import annotations


_PATHS = [
    "$.data.p", "$.p", "$.price", "$.trade_price",  # price
    "$.data.q", "$.q", "$.qty", "$.trade_volume",  # base volume
    "$.data.m", "$.m", "$.isBuyerMaker", "$.ask_bid",  # taker side
]


def with_trade_fields(source_sql: str) -> str:
    """``source_sql`` (which has a VARCHAR ``raw_json``) plus typed ``price, volume, side`` (NULL for an unknown shape).

    The JSON is parsed once per row (one multi-path extract), not once per field.
    """
    paths = ", ".join(f"'{p}'" for p in _PATHS)

    def first_number(i: int) -> str:
        return "COALESCE(" + ", ".join(f"TRY_CAST(_f[{k}] AS DOUBLE)" for k in range(i, i + 4)) + ")"

    return f"""
        SELECT * EXCLUDE (_f),
            {first_number(1)} AS price,
            {first_number(5)} AS volume,
            CASE COALESCE(_f[9], _f[10], _f[11], _f[12])
                WHEN 'true' THEN 'sell' WHEN 'false' THEN 'buy' WHEN 'ASK' THEN 'sell' WHEN 'BID' THEN 'buy'
            END AS side
        FROM (SELECT *, json_extract_string(raw_json, [{paths}]) AS _f FROM ({source_sql}))
    """
