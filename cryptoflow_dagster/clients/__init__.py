"""REST clients for Upbit, Binance and alternative.me, with the exchanges' rate limits built in.

Used by the batch assets (candles, Fear & Greed) and by the streaming path for gap repair (Upbit trade ticks, Binance
aggTrades / historicalTrades by ``fromId``).
"""

from cryptoflow_dagster.clients.binance import BinanceClient
from cryptoflow_dagster.clients.fear_greed import FearGreedClient
from cryptoflow_dagster.clients.http import BannedError, ExchangeError, RateLimitStop
from cryptoflow_dagster.clients.upbit import Page, UpbitClient

__all__ = ["BannedError", "BinanceClient", "ExchangeError", "FearGreedClient", "Page", "RateLimitStop", "UpbitClient"]
