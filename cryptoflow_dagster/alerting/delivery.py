"""Deliver pending outbox rows to Slack: claim, post, settle; retries with backoff, Retry-After honoured.

A pass stops at the first error that says Slack is unavailable (5xx, connection refused, a long rate limit): the rest wait
for the next pass in pending, so an outage delays alerts and loses none; after ``max_attempts`` a row is failed with its
last error. Short Retry-After waits are slept within the pass (bounded by ``budget_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import duckdb

from cryptoflow_core import retry
from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.messages import alert_message
from cryptoflow_dagster.alerting.model import FAILED, PENDING, SENT
from cryptoflow_dagster.alerting.slack import SlackPoster

log = logging.getLogger(__name__)


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
    lease_s: float = 120.0,
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
        text, blocks = alert_message(row, ui_url)
        metadata = {"event_type": "cryptoflow_alert", "event_payload": {"alert_id": alert_id, "rule": row["rule"]}}
        attempts = row["attempts"]
        while True:
            if not outbox.claim(con, alert_id, current(), lease_s):
                break  # another sender took it
            attempts += 1
            result = poster.post(text, blocks, metadata)
            if result.ok:
                outbox.settle(con, alert_id, SENT, now=current())
                report.sent.append(alert_id)
                break
            log.warning("alert %s delivery attempt %d failed: %s", alert_id, attempts, result.error)
            if result.permanent or attempts >= max_attempts:
                outbox.settle(con, alert_id, FAILED, now=current(), error=result.error)
                report.failed.append(alert_id)
                break
            wait = result.retry_after_s if result.retry_after_s is not None else backoff_s(attempts)
            if result.retry_after_s is not None and time.monotonic() - clock_start + wait <= budget_s:
                outbox.settle(con, alert_id, PENDING, now=current(), error=result.error)
                sleep(wait)
                continue
            outbox.settle(con, alert_id, PENDING, now=current(), error=result.error,
                          retry_at=current() + timedelta(seconds=wait))
            report.retry_later.append(alert_id)
            return report  # Slack is unavailable: leave the rest pending for the next pass
    return report
