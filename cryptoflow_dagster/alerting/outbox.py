"""``gold.alerts`` as an outbox: an alert is written (pending) before anyone tries to deliver it.

- :func:`record` drops an alert whose dedupe key is already stored, and one that falls inside the cooldown of an earlier
  alert of the same rule and subject, so re-evaluating the same data after a restart records nothing new.
- Delivery (delivery.py) claims a row (pending -> sending, attempts + 1) in its own committed transaction before posting, and
  settles it (sent | pending again with a later ``next_attempt_at`` | failed) after: a restart finds every undelivered alert
  still pending, and a row whose post may have happened stays out of the pending set (see docs/decisions/0005).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb

from cryptoflow_dagster import lake
from cryptoflow_dagster.alerting.messages import redact
from cryptoflow_dagster.alerting.model import FAILED, PENDING, SENDING, SENT, Alert

if TYPE_CHECKING:
    import polars as pl

COLUMNS = (
    "alert_id, rule, exchange, market, event_time, triggered_at, value, threshold, message, dedupe_key, status, "
    "attempts, delivered_at, last_error, next_attempt_at, details_json"
)


def _frame(alerts: list[Alert]) -> pl.DataFrame:
    import polars as pl  # on first use, not at import: loading the code location does not need it

    return pl.DataFrame(
        {
            "alert_id": [a.alert_id for a in alerts],
            "rule": [a.rule for a in alerts],
            "exchange": [a.exchange for a in alerts],
            "market": [a.market for a in alerts],
            "event_time": [a.event_time for a in alerts],
            "triggered_at": [a.triggered_at for a in alerts],
            "value": [a.value for a in alerts],
            "threshold": [a.threshold for a in alerts],
            "message": [redact(a.message) for a in alerts],
            "dedupe_key": [a.dedupe_key for a in alerts],
            "status": [PENDING] * len(alerts),
            "attempts": [0] * len(alerts),
            "details_json": [redact(json.dumps(a.details, default=str, sort_keys=True)) for a in alerts],
        },
        schema_overrides={
            "exchange": pl.String, "market": pl.String, "value": pl.Float64, "threshold": pl.Float64,
            "event_time": pl.Datetime("us", "UTC"), "triggered_at": pl.Datetime("us", "UTC"), "attempts": pl.Int32,
        },
    )


def _moment(a: Alert) -> datetime:
    return a.event_time or a.triggered_at


def record(con: duckdb.DuckDBPyConnection, alerts: list[Alert]) -> list[Alert]:
    """Write the new alerts as pending; return those written (duplicates and cooled-down repeats are dropped)."""
    if not alerts:
        return []

    def work(c: duckdb.DuckDBPyConnection) -> list[Alert]:
        keys = [a.dedupe_key for a in alerts]
        seen = {r[0] for r in c.execute("SELECT dedupe_key FROM gold.alerts WHERE list_contains(?, dedupe_key)",
                                        [keys]).fetchall()}
        subjects = sorted({(a.rule, a.exchange or "", a.market or "") for a in alerts})
        last: dict[str, list[datetime]] = {}
        for rule, exchange, market in subjects:
            rows = c.execute(
                "SELECT coalesce(event_time, triggered_at) FROM gold.alerts "
                "WHERE rule = ? AND coalesce(exchange, '') = ? AND coalesce(market, '') = ?",
                [rule, exchange, market],
            ).fetchall()
            last[f"{rule}|{exchange}|{market}"] = [r[0] for r in rows]
        kept: list[Alert] = []
        for a in sorted(alerts, key=_moment):
            if a.dedupe_key in seen:
                continue
            window = timedelta(seconds=a.cooldown_s)
            earlier = last.setdefault(a.subject, [])
            if a.cooldown_s > 0 and any(abs(_moment(a) - t) < window for t in earlier):
                continue
            seen.add(a.dedupe_key)
            earlier.append(_moment(a))
            kept.append(a)
        lake.insert(c, "gold.alerts", _frame(kept))
        return kept

    return lake.write(con, work)


def due(con: duckdb.DuckDBPyConnection, now: datetime, limit: int = 50) -> list[dict]:
    """Pending alerts whose next attempt is due, oldest first."""
    cur = con.execute(
        f"SELECT {COLUMNS} FROM gold.alerts WHERE status = ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
        "ORDER BY triggered_at, event_time NULLS LAST, alert_id LIMIT ?",
        [PENDING, now, limit],
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def claim(con: duckdb.DuckDBPyConnection, alert_id: str, now: datetime, lease_s: float) -> bool:
    """pending -> sending (attempts + 1), committed before the post; False when someone else took it first."""

    def work(c: duckdb.DuckDBPyConnection) -> bool:
        n = c.execute(
            "UPDATE gold.alerts SET status = ?, attempts = attempts + 1, next_attempt_at = ? "
            "WHERE alert_id = ? AND status = ?",
            [SENDING, now + timedelta(seconds=lease_s), alert_id, PENDING],
        ).fetchone()[0]
        return n > 0

    return lake.write(con, work)


def settle(con: duckdb.DuckDBPyConnection, alert_id: str, status: str, *, now: datetime,
           error: str | None = None, retry_at: datetime | None = None) -> None:
    """sending -> sent | pending (retry at ``retry_at``) | failed, with the error kept."""
    if status not in (SENT, PENDING, FAILED):
        raise ValueError(f"cannot settle an alert as {status!r}")
    lake.write(con, lambda c: c.execute(
        "UPDATE gold.alerts SET status = ?, delivered_at = ?, last_error = ?, next_attempt_at = ? WHERE alert_id = ?",
        [status, now if status == SENT else None, error, retry_at, alert_id],
    ))


def expire_stale_claims(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """A claim whose lease ran out belongs to a process that stopped mid-post: Slack may or may not have the message.

    Posting again could double it, so the row is marked failed with the reason: visible, and never sent twice.
    Looked for with a read first: nearly always there is none, and a write would wait for the writers' turn (behind a
    streaming chunk) on every delivery pass, the market alert sensor's included.
    """
    stale = con.execute("SELECT count(*) FROM gold.alerts WHERE status = ? AND next_attempt_at < ?", [SENDING, now])
    if not stale.fetchone()[0]:
        return 0

    def work(c: duckdb.DuckDBPyConnection) -> int:
        return c.execute(
            "UPDATE gold.alerts SET status = ?, last_error = 'delivery outcome unknown: the sender stopped during the post' "
            "WHERE status = ? AND next_attempt_at < ?",
            [FAILED, SENDING, now],
        ).fetchone()[0]

    return lake.write(con, work)
