"""The markets the platform follows when a setting names a rule instead of a list (docs/width.md, ADR 0019).

``CRYPTOFLOW_UPBIT_MARKETS=ALL`` is every KRW- market Upbit's ``/v1/market/all`` lists; ``CRYPTOFLOW_BINANCE_SYMBOLS=
TOP50`` the 50 trading USDT symbols of ``/api/v3/exchangeInfo`` with the highest 24 h quote volume
(``/api/v3/ticker/24hr``), ``ALL`` every one of them. The sidecar resolves them when it starts (with retries) and writes
the list to ``<landing>/_markets/<exchange>.json``, beside its heartbeat; every Dagster consumer (alert rules, REST
collection, ``cryptoflow doctor``) reads that file through :func:`configured_markets`, so the platform follows exactly
the markets the sidecar subscribed. Before any sidecar ran, the platform resolves the same way and writes the file
itself (the sidecar overwrites it at its next start). A plain comma-separated list never touches the network.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import orjson

from cryptoflow_core.retry import retry
from cryptoflow_core.settings import (
    Settings,
    SettingsError,
    market_selector,
    validate_binance_symbol,
    validate_upbit_market,
)

log = logging.getLogger(__name__)

MARKETS_DIR = "_markets"
EXCHANGES = ("upbit", "binance")
_QUOTE = {"upbit": "KRW-", "binance": "USDT"}


class MarketListError(RuntimeError):
    """The exchange's market list could not be read (after retries) or named no market."""


def setting_values(settings: Settings, exchange: str) -> tuple[str, ...]:
    if exchange == "upbit":
        return settings.upbit_markets
    if exchange == "binance":
        return settings.binance_symbols
    raise SettingsError(f"unknown exchange {exchange!r}: expected upbit or binance")


def list_path(landing: Path, exchange: str) -> Path:
    return landing / MARKETS_DIR / f"{exchange}.json"


def configured_markets(settings: Settings, exchange: str, *, resolve_missing: bool = True) -> tuple[str, ...]:
    """The markets of ``exchange`` the platform follows: the setting's list, or the resolved list of its selector.

    A selector is read from the sidecar's list file when that file was resolved for the same selector; otherwise (no
    sidecar ran yet, or the setting changed since) it is resolved from the exchange's REST and written there, unless
    ``resolve_missing`` is False (then: empty).
    """
    values = setting_values(settings, exchange)
    selector = market_selector(exchange, values)
    if selector is None:
        return values
    saved = read_list(settings.landing_dir, exchange)
    if saved is not None and saved["selector"] == selector:
        return tuple(saved["markets"])
    if not resolve_missing:
        return ()
    markets = resolve(settings, exchange, selector)
    write_list(settings.landing_dir, exchange, selector, markets)
    return markets


def all_configured(settings: Settings) -> list[tuple[str, str]]:
    """(exchange, market) of every configured market, Upbit first."""
    return [(e, m) for e in EXCHANGES for m in configured_markets(settings, e)]


# The list file is small and read on every sensor tick: its parsed content is kept until its mtime changes.
_cache: dict[Path, tuple[int, dict]] = {}


def read_list(landing: Path, exchange: str) -> dict | None:
    """``{"selector", "markets", "resolved_at"}`` as the sidecar wrote it, or None (no file, or unreadable)."""
    path = list_path(landing, exchange)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        data = orjson.loads(path.read_bytes())
        markets = tuple(data["markets"])
        for market in markets:  # the names reach URLs, SQL parameters and landing paths: checked like a setting
            _validate(exchange, market)
        data = {"selector": str(data["selector"]), "markets": markets, "resolved_at": data.get("resolved_at")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("market list %s unreadable (%s): resolving again", path, exc)
        return None
    _cache[path] = (mtime, data)
    return data


def write_list(landing: Path, exchange: str, selector: str, markets: tuple[str, ...]) -> Path:
    """Replace the list file atomically (a reader gets the old list or the new one, never a torn file)."""
    path = list_path(landing, exchange)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps({"selector": selector, "markets": list(markets),
                                  "resolved_at": datetime.now(timezone.utc).isoformat()}, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def resolve(settings: Settings, exchange: str, selector: str, *, attempts: int = 6, timeout_s: float = 10.0
            ) -> tuple[str, ...]:
    """Ask the exchange's REST which markets ``selector`` means, retrying transport errors, 429/418 and 5xx."""
    import httpx  # on first use: the settings-only importers of this module never pay for it

    def retryable(exc: Exception) -> bool:
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code in (418, 429) or exc.response.status_code >= 500
        return isinstance(exc, httpx.TransportError)

    def on_retry(attempt: int, wait_s: float, exc: Exception) -> None:
        log.warning("resolving %s markets %s: attempt %d failed (%s); again in %.1f s", exchange, selector, attempt,
                    exc, wait_s)

    with httpx.Client(timeout=timeout_s) as client:
        try:
            if exchange == "upbit":
                markets = retry(lambda: _upbit_all(client, settings.upbit_rest_url), retryable=retryable,
                                attempts=attempts, base_s=0.5, cap_s=10.0, jitter="equal", on_retry=on_retry)
            else:
                markets = retry(lambda: _binance(client, settings.binance_rest_url, selector), retryable=retryable,
                                attempts=attempts, base_s=0.5, cap_s=10.0, jitter="equal", on_retry=on_retry)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise MarketListError(f"could not resolve {exchange} markets {selector}: {exc}") from exc
    if not markets:
        raise MarketListError(f"{exchange} markets {selector}: the exchange lists none")
    log.info("%s markets %s resolved to %d: %s", exchange, selector, len(markets), ",".join(markets))
    return markets


def _validate(exchange: str, market: str) -> str:
    return validate_upbit_market(market) if exchange == "upbit" else validate_binance_symbol(market)


def _valid(exchange: str, market: object) -> bool:
    try:
        _validate(exchange, market)  # type: ignore[arg-type]
    except (SettingsError, TypeError):
        return False
    return True


def _upbit_all(client, base_url: str) -> tuple[str, ...]:
    response = client.get(f"{base_url.rstrip('/')}/v1/market/all", params={"is_details": "false"})
    response.raise_for_status()
    listed = [row.get("market") for row in response.json() if isinstance(row, dict)]
    # KRW markets only (the one quote the premium and the demo speak); a code our pattern refuses is left out, loudly
    wanted = [m for m in listed if isinstance(m, str) and m.startswith(_QUOTE["upbit"])]
    refused = [m for m in wanted if not _valid("upbit", m)]
    if refused:
        log.warning("Upbit lists market codes outside the accepted pattern, not followed: %s", refused)
    return tuple(sorted(m for m in wanted if m not in refused))


def _binance(client, base_url: str, selector: str) -> tuple[str, ...]:
    base = base_url.rstrip("/")
    response = client.get(f"{base}/api/v3/exchangeInfo")
    response.raise_for_status()
    symbols = [s for s in response.json()["symbols"]
               if s.get("status") == "TRADING" and s.get("quoteAsset") == "USDT"
               and s.get("isSpotTradingAllowed", True) and _valid("binance", s.get("symbol"))]
    names = [s["symbol"] for s in symbols]
    if selector == "ALL":
        return tuple(sorted(names))
    top = int(selector[3:])
    volume = _quote_volumes(client, base)
    if volume is None:
        log.warning("Binance /api/v3/ticker/24hr unavailable: TOP%d taken in exchangeInfo order", top)
        return tuple(names[:top])
    # highest 24 h quote volume first; ties (and symbols the ticker does not list) by name, so the pick is stable
    ranked = sorted(names, key=lambda s: (-volume.get(s, 0.0), s))
    return tuple(ranked[:top])


def _quote_volumes(client, base: str) -> dict[str, float] | None:
    import httpx

    response = client.get(f"{base}/api/v3/ticker/24hr")  # every symbol: weight 80, once per start
    if response.status_code == 404:
        return None  # an exchange (or simulator) without the endpoint: still usable, unranked
    response.raise_for_status()
    out: dict[str, float] = {}
    for row in response.json():
        try:
            out[row["symbol"]] = float(row["quoteVolume"])
        except (KeyError, TypeError, ValueError):
            continue
    if not out:
        raise httpx.HTTPError("ticker/24hr listed no quote volume")
    return out

