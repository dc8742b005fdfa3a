"""``gold.alerts`` as an outbox: an alert is written (pending) before anyone tries to deliver it.

- :func:`record` drops an alert whose dedupe key is already stored, and one that falls inside the cooldown of an earlier
  alert of the same rule and subject, so re-evaluating the same data after a restart records nothing new.
- Delivery (delivery.py) claims a row (pending -> sending, attempts + 1) in its own committed transaction before posting, and
  settles it (sent | pending again with a later ``next_attempt_at`` | failed) after: a restart finds every undelivered alert
  still pending, and a row whose post may have happened stays out of the pending set (see docs/decisions/0005).
- The market alert sensor posts its alerts first and records them after, each with how its post ended, in one
  commit (:func:`record_posted`): every lake commit waits for the writers' turn, often behind a streaming chunk, and
  none now stands between a price shock and its message. Between the post and that commit the alerts live in a synced
  file on the code server's disk (``alerting/in_flight.py``), so a sensor stopped in between forgets none and posts none
  twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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


def _frame(alerts: list[Alert], states: list[Settled] | None = None, now: datetime | None = None) -> pl.DataFrame:
    """Outbox rows: pending, or (``states``, one per alert) as each post ended at ``now``."""
    import polars as pl  # on first use, not at import: loading the code location does not need it

    states = states or [Settled(a.alert_id, PENDING, posted=False) for a in alerts]
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
            "status": [o.status for o in states],
            "attempts": [int(o.posted) for o in states],
            "delivered_at": [now if o.status == SENT else None for o in states],
            "last_error": [redact(o.error) if o.error else None for o in states],
            "next_attempt_at": [o.retry_at for o in states],
            "details_json": [redact(json.dumps(a.details, default=str, sort_keys=True)) for a in alerts],
        },
        schema_overrides={
            "exchange": pl.String, "market": pl.String, "value": pl.Float64, "threshold": pl.Float64,
            "event_time": pl.Datetime("us", "UTC"), "triggered_at": pl.Datetime("us", "UTC"), "attempts": pl.Int32,
            "delivered_at": pl.Datetime("us", "UTC"), "last_error": pl.String, "next_attempt_at": pl.Datetime("us", "UTC"),
        },
    )


def rows_of(alerts: list[Alert]) -> list[dict]:
    """The outbox rows of ``alerts`` as :func:`due` returns them (what a message is built from), without a read."""
    return [{**row, "delivered_at": None, "last_error": None} for row in _frame(alerts).to_dicts()]


def _moment(a: Alert) -> datetime:
    return a.event_time or a.triggered_at


def record(con: duckdb.DuckDBPyConnection, alerts: list[Alert]) -> list[Alert]:
    """Write the new alerts as pending; return those written (duplicates and cooled-down repeats are dropped)."""
    return lake.write(con, lambda c: _insert(c, alerts)) if alerts else []


def unrecorded(con: duckdb.DuckDBPyConnection, alerts: list[Alert], *, known: list[Alert] = ()) -> list[Alert]:
    """The ``alerts`` :func:`record` would write now (a read: no writers' turn), counting ``known`` as stored too. A
    caller that posts before it records (the market alert sensor) asks this first; it must be the only writer of these
    rules' alerts in between, and passes what it posted lately: a read outside the writers' turn can miss rows for a
    moment while lake maintenance flushes inlined rows (measured: a reader's count fell by the rows inlined since the
    last flush in 6 of 900 reads during flushes, DuckLake with DuckDB 1.5.5; docs/decisions/0005, addendum 2)."""
    return _new(con, alerts, known) if alerts else []


def record_posted(con: duckdb.DuckDBPyConnection, alerts: list[Alert], outcomes: list[Settled], *,
                  now: datetime) -> list[Alert]:
    """Write alerts already posted, each with how its post ended (``outcomes``, same order), in one commit; return
    those written. One already stored (recorded by someone else since :func:`unrecorded`) is left as stored."""
    if not alerts:
        return []
    by_id = {o.alert_id: o for o in outcomes}
    return lake.write(con, lambda c: _insert(c, alerts, lambda kept: [by_id[a.alert_id] for a in kept], now))


def _insert(c: duckdb.DuckDBPyConnection, alerts: list[Alert], states=None, now: datetime | None = None) -> list[Alert]:
    kept = _new(c, alerts)
    lake.insert(c, "gold.alerts", _frame(kept, states(kept) if states else None, now))
    return kept


def _new(c: duckdb.DuckDBPyConnection, alerts: list[Alert], known: list[Alert] = ()) -> list[Alert]:
    """``alerts`` less those whose dedupe key is stored (or ``known``) and those inside the cooldown of a stored, known
    or earlier one."""
    keys = [a.dedupe_key for a in alerts]
    seen = {r[0] for r in c.execute("SELECT dedupe_key FROM gold.alerts WHERE list_contains(?, dedupe_key)",
                                    [keys]).fetchall()} | {a.dedupe_key for a in known}
    subjects = sorted({(a.rule, a.exchange or "", a.market or "") for a in alerts})
    last: dict[str, list[datetime]] = {}
    for rule, exchange, market in subjects:
        rows = c.execute(
            "SELECT coalesce(event_time, triggered_at) FROM gold.alerts "
            "WHERE rule = ? AND coalesce(exchange, '') = ? AND coalesce(market, '') = ?",
            [rule, exchange, market],
        ).fetchall()
        last[f"{rule}|{exchange}|{market}"] = [r[0] for r in rows]
    for a in known:
        last.setdefault(a.subject, []).append(_moment(a))
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
    return kept


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


@dataclass(frozen=True)
class Settled:
    """How one claimed row ends: sent | pending (retry at ``retry_at``) | failed, with the error kept. ``posted``
    False: the claim is handed back unused (Slack was found unavailable before its turn), its attempt not counted."""

    alert_id: str
    status: str
    error: str | None = None
    retry_at: datetime | None = None
    posted: bool = True


def settle(con: duckdb.DuckDBPyConnection, alert_id: str, status: str, *, now: datetime,
           error: str | None = None, retry_at: datetime | None = None) -> None:
    """sending -> sent | pending (retry at ``retry_at``) | failed, with the error kept."""
    settle_all(con, [Settled(alert_id, status, error, retry_at)], now=now)


def settle_all(con: duckdb.DuckDBPyConnection, outcomes: list[Settled], *, now: datetime) -> None:
    """Settle claimed rows, all in one commit."""
    for o in outcomes:
        if o.status not in (SENT, PENDING, FAILED):
            raise ValueError(f"cannot settle an alert as {o.status!r}")
    if not outcomes:
        return

    def work(c: duckdb.DuckDBPyConnection) -> None:
        for o in outcomes:
            c.execute(
                "UPDATE gold.alerts SET status = ?, delivered_at = ?, last_error = ?, next_attempt_at = ?, "
                "attempts = attempts - ? WHERE alert_id = ?",
                [o.status, now if o.status == SENT else None, o.error, o.retry_at, 0 if o.posted else 1, o.alert_id],
            )

    lake.write(con, work)


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
