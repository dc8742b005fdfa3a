"""The calls other parts of the platform make into alerting.

- The market alert sensor, once per tick with the trade files landed since its last one:
  ``landing_alerts(con, root, files)`` (built on ``market_alerts(con, trades)``), posted and then recorded by
  ``delivery.post_then_record``; ``record_landing_alerts`` records them pending instead.
- Anything outside Dagster that wants to deliver (the CLI): ``deliver_pending(con, poster_from_env(settings))``; inside
  Dagster the ``alert_delivery_sensor`` does it with the ``slack`` resource.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.market import VolatilityMemo, evaluate_market_rules, max_lookback_s
from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_dagster.alerting.rules import RuleSet, load_rules, rules_path
from cryptoflow_dagster.alerting.slack import SlackPoster, make_poster
from cryptoflow_dagster.streaming.ingest import not_ingested, staged_trades
from cryptoflow_core.settings import Settings, load_settings
from cryptoflow_core import landing_files, market_list

log = logging.getLogger(__name__)

# A file is ingested after it is written; the sidecar and the streaming run may read slightly different clocks.
_CLOCK_MARGIN = timedelta(minutes=1)

_rules_cache: dict[Path, tuple[float, RuleSet]] = {}
# Per lake, the market alert evaluations' volatility limits (one per market, for the current minute): the standing
# code server's market alert sensor evaluates batch after batch, tick after tick.
_volatility_memos: dict[tuple[str, str, str], VolatilityMemo] = {}


def rules_for(settings: Settings) -> RuleSet:
    """The rule file, re-read when it changes (so thresholds can be tuned without a restart)."""
    path = rules_path(settings)
    mtime = path.stat().st_mtime
    cached = _rules_cache.get(path)
    if cached is None or cached[0] != mtime:
        cached = (mtime, load_rules(path))
        _rules_cache[path] = cached
    return cached[1]


def market_alerts(
    con: duckdb.DuckDBPyConnection, trades: Any, settings: Settings | None = None, now: datetime | None = None,
    context: Any = None, timings: dict[str, float] | None = None,
) -> list[Alert]:
    """The market rules' alerts on a new micro-batch (records nothing).

    Needs the columns exchange, market, trade_id, ts, price, volume. Event times come from the data, so a batch
    evaluated again yields the same dedupe keys (recorded once). A failure here is logged and yields nothing: trades
    matter more than an alert about them. ``timings``: "evaluated" is filled with the seconds the rules took.
    """
    try:
        settings = settings or load_settings()
        lake_id = (str(settings.home), settings.lake_catalog, settings.lake_data_path)
        memo = _volatility_memos.setdefault(lake_id, VolatilityMemo())
        started = time.monotonic()
        alerts = evaluate_market_rules(con, trades, rules_for(settings), now, context, memo)
        if timings is not None:
            timings["evaluated"] = time.monotonic() - started
        return alerts
    except Exception:
        log.exception("market alert evaluation failed for a batch of %d trades; ingestion continues", len(trades))
        return []


def landing_alerts(
    con: duckdb.DuckDBPyConnection, root: Path, files: list[landing_files.LandingFile], settings: Settings | None = None,
    now: datetime | None = None, timings: dict[str, float] | None = None,
) -> list[Alert]:
    """Market alerts for newly landed trade ``files``, evaluated before (and whether or not) they reach silver.

    History comes from silver plus the landed files of the rules' look-back that silver does not hold yet (a streaming
    run may be behind, or down): a move that starts in a file still in flight is not missed.
    """
    if not files:
        return []
    settings = settings or load_settings()
    started = time.monotonic()
    try:
        rules = rules_for(settings)
        markets = sorted({(f.exchange, m) for f in files for m in _markets_of(settings, f.exchange)})
        since = min(f.written_at for f in files) - timedelta(seconds=max_lookback_s(rules, markets))
        new = {f.relative for f in files}
        earlier = [f for f in landing_files.list_files(root, after=landing_files.file_name(since, "0" * 8, 0), channels=("trade",))
                   if f.relative not in new]
        context = staged_trades(con, not_ingested(con, earlier, since - _CLOCK_MARGIN))
        trades = staged_trades(con, files)
    except Exception:
        log.exception("reading %d landed files for market alerts failed; they are not evaluated", len(files))
        return []
    if timings is not None:
        timings["read"] = time.monotonic() - started  # the new files and the not yet ingested ones before them
    return market_alerts(con, trades, settings, now, context=context, timings=timings)


def record_landing_alerts(
    con: duckdb.DuckDBPyConnection, root: Path, files: list[landing_files.LandingFile], settings: Settings | None = None,
    now: datetime | None = None,
) -> list[Alert]:
    """:func:`landing_alerts`, recorded pending in the outbox for the delivery sensor; returns those recorded."""
    return outbox.record(con, landing_alerts(con, root, files, settings, now))


def _markets_of(settings: Settings, exchange: str) -> tuple[str, ...]:
    # a selector (ALL, TOP50) means the list the sidecar resolved and subscribed (cryptoflow_core/market_list.py)
    return market_list.configured_markets(settings, exchange)


def poster_from_env(settings: Settings | None = None) -> SlackPoster | None:
    """For code paths outside Dagster: the token comes from the environment and goes only into the client."""
    settings = settings or load_settings()
    return make_poster(os.environ.get("SLACK_BOT_TOKEN"), settings.slack_api_url, settings.slack_channel)
