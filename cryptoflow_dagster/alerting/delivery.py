"""Deliver outbox rows to Slack: claim, post, settle; retries with backoff, Retry-After honoured.

Two ways in:

- :func:`deliver_pending` (the delivery sensor, the CLI): due pending rows, each claimed, posted and settled. A pass
  stops at the first error that says Slack is unavailable (5xx, connection refused, a long rate limit): the rest wait
  for the next pass in pending, so an outage delays alerts and loses none; after ``max_attempts`` a row is failed with
  its last error. Short Retry-After waits are slept within the pass (bounded by ``budget_s``).
- :func:`post_then_record` (the market alert sensor): alerts it has just evaluated, posted at once and then recorded
  with their outcomes in one commit (``in_flight.py`` holds them in between). Nothing is retried here: an alert that
  could not go is recorded pending for the delivery sensor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from cryptoflow_core import retry
from cryptoflow_dagster.alerting import in_flight, outbox
from cryptoflow_dagster.alerting.messages import alert_message
from cryptoflow_dagster.alerting.model import FAILED, PENDING, SENT, Alert
from cryptoflow_dagster.alerting.slack import SlackPoster

log = logging.getLogger(__name__)

# How long a claim keeps a row from other senders: longer than any post with its Retry-After waits in a pass.
LEASE_S = 120.0


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retry_later: list[str] = field(default_factory=list)
    expired_claims: int = 0
    skipped_reason: str | None = None


def backoff_s(attempt: int, base_s: float = 2.0, cap_s: float = 300.0) -> float:
    """Wait before attempt ``attempt + 1``: 2, 4, 8, ... seconds, capped at 5 minutes, without jitter."""
    return retry.backoff_s(attempt, base_s=base_s, cap_s=cap_s, jitter="none")


def deliver_pending(
    con: duckdb.DuckDBPyConnection,
    poster: SlackPoster | None,
    ui_url: str = "http://127.0.0.1:3000",
    *,
    now: datetime | None = None,
    max_attempts: int = 8,
    budget_s: float = 15.0,
    lease_s: float = LEASE_S,
    limit: int = 50,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Send due pending alerts once each. ``now`` fixes the pass's clock (tests step it to replay an outage)."""
    report = DeliveryReport()
    clock_start = time.monotonic()
    start = now or datetime.now(timezone.utc)

    def current() -> datetime:
        return start + timedelta(seconds=time.monotonic() - clock_start)

    report.expired_claims = outbox.expire_stale_claims(con, start)
    if poster is None:
        report.skipped_reason = "no Slack token: alerts stay pending in gold.alerts"
        return report
    for row in outbox.due(con, start, limit):
        alert_id = row["alert_id"]
        attempts = row["attempts"]
        while True:
            if not outbox.claim(con, alert_id, current(), lease_s):
                break  # another sender took it
            attempts += 1
            outcome, wait = _post(poster, row, ui_url, attempts, max_attempts, current)
            if outcome.status == PENDING and wait is not None and time.monotonic() - clock_start + wait <= budget_s:
                outbox.settle(con, alert_id, PENDING, now=current(), error=outcome.error)  # a short Retry-After
                sleep(wait)
                continue
            outbox.settle_all(con, [outcome], now=current())
            _report(report, outcome)
            if outcome.status == PENDING:
                return report  # Slack is unavailable: leave the rest pending for the next pass
            break
    return report


def post_then_record(
    con: duckdb.DuckDBPyConnection,
    poster: SlackPoster,
    alerts: list[Alert],
    in_flight_path: Path,
    ui_url: str = "http://127.0.0.1:3000",
    *,
    max_attempts: int = 8,
    timings: dict[str, float] | None = None,
    recently_posted: in_flight.RecentlyPosted | None = None,
) -> tuple[list[Alert], DeliveryReport]:
    """Post the new ones of ``alerts`` at once, then record them with their outcomes in one commit; return them.

    No lake commit stands before the post (each waits for the writers' turn); ``in_flight_path`` holds them in between,
    so a stop there loses and doubles nothing (``in_flight.recover``). Once Slack is found unavailable the rest are not
    tried: they are recorded pending, their attempt not counted. ``timings``: "posted" and "recorded" are filled with
    the seconds each took. ``recently_posted``: kept by a caller that posts batch after batch (the sensor), counted as
    recorded by the check before the posts (``outbox.unrecorded``)."""
    report = DeliveryReport()
    known = recently_posted.alerts(time.monotonic()) if recently_posted is not None else []
    fresh = outbox.unrecorded(con, alerts, known=known)
    if not fresh:
        return [], report
    started = time.monotonic()
    in_flight.write(in_flight_path, fresh)
    outcomes: list[outbox.Settled] = []
    for row in outbox.rows_of(fresh):
        if outcomes and outcomes[-1].status == PENDING:
            outcomes.append(outbox.Settled(row["alert_id"], PENDING, retry_at=outcomes[-1].retry_at, posted=False))
            continue
        outcome, _ = _post(poster, row, ui_url, 1, max_attempts, lambda: datetime.now(timezone.utc))
        outcomes.append(outcome)
    posted = time.monotonic()
    if recently_posted is not None:
        recently_posted.add([a for a, o in zip(fresh, outcomes) if o.posted], posted)
    in_flight.write(in_flight_path, fresh, outcomes)
    recorded = outbox.record_posted(con, fresh, outcomes, now=datetime.now(timezone.utc))
    in_flight.clear(in_flight_path)
    if timings is not None:
        timings.update(posted=posted - started, recorded=time.monotonic() - posted)
    if len(recorded) < len(fresh):
        log.warning("%d posted market alerts were already in gold.alerts (or inside a stored one's cooldown) although the "
                    "check before the post did not see them: they went to Slack again", len(fresh) - len(recorded))
    for outcome in outcomes:
        _report(report, outcome)
    return fresh, report


def _post(poster: SlackPoster, row: dict, ui_url: str, attempts: int, max_attempts: int,
          now: Callable[[], datetime]) -> tuple[outbox.Settled, float | None]:
    """Post one claimed row; how it ends, and (when it may be retried after a Retry-After) that wait."""
    alert_id = row["alert_id"]
    text, blocks = alert_message(row, ui_url)
    metadata = {"event_type": "cryptoflow_alert", "event_payload": {"alert_id": alert_id, "rule": row["rule"]}}
    result = poster.post(text, blocks, metadata)
    if result.ok:
        return outbox.Settled(alert_id, SENT), None
    log.warning("alert %s delivery attempt %d failed: %s", alert_id, attempts, result.error)
    if result.permanent or attempts >= max_attempts:
        return outbox.Settled(alert_id, FAILED, result.error), None
    wait = result.retry_after_s if result.retry_after_s is not None else backoff_s(attempts)
    retry_at = now() + timedelta(seconds=wait)
    return outbox.Settled(alert_id, PENDING, result.error, retry_at), result.retry_after_s


def _report(report: DeliveryReport, outcome: outbox.Settled) -> None:
    {SENT: report.sent, FAILED: report.failed, PENDING: report.retry_later}[outcome.status].append(outcome.alert_id)
