"""The calls other parts of the platform make into alerting.

- The streaming sensor, once per new micro-batch of silver trades: ``record_market_alerts(con, trades)``.
- Anything outside Dagster that wants to deliver (the CLI): ``deliver_pending(con, poster_from_env(settings))``; inside
  Dagster the ``alert_delivery_sensor`` does it with the ``slack`` resource.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.market import evaluate_market_rules
from cryptoflow_dagster.alerting.model import Alert
from cryptoflow_dagster.alerting.rules import RuleSet, load_rules
from cryptoflow_dagster.alerting.slack import SlackPoster, make_poster
from cryptoflow_dagster.settings import Settings, load_settings

log = logging.getLogger(__name__)

_rules_cache: dict[Path, tuple[float, RuleSet]] = {}


def rules_for(settings: Settings) -> RuleSet:
    """The rule file, re-read when it changes (so thresholds can be tuned without a restart)."""
    path = settings.alert_rules
    mtime = path.stat().st_mtime
    cached = _rules_cache.get(path)
    if cached is None or cached[0] != mtime:
        cached = (mtime, load_rules(path))
        _rules_cache[path] = cached
    return cached[1]


def record_market_alerts(
    con: duckdb.DuckDBPyConnection, trades: Any, settings: Settings | None = None, now: datetime | None = None
) -> list[Alert]:
    """Evaluate the market rules on a new micro-batch and write what fires to the outbox (pending). Returns it.

    Needs the columns exchange, market, trade_id, ts, price, volume. Call it before the batch's own lake transaction:
    alerts then do not wait for any gold work, and a retried batch yields the same dedupe keys (recorded once).
    A failure here is logged and never stops ingestion: trades matter more than an alert about them.
    """
    try:
        settings = settings or load_settings()
        return outbox.record(con, evaluate_market_rules(con, trades, rules_for(settings), now))
    except Exception:
        log.exception("market alert evaluation failed for a batch of %d trades; ingestion continues", len(trades))
        return []


def poster_from_env(settings: Settings | None = None) -> SlackPoster | None:
    """For code paths outside Dagster: the token comes from the environment and goes only into the client."""
    settings = settings or load_settings()
    return make_poster(os.environ.get("SLACK_BOT_TOKEN"), settings.slack_api_url, settings.slack_channel)
