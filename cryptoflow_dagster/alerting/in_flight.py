"""Market alerts between their post to Slack and their row in ``gold.alerts``: one synced file on the code server's disk.

The market alert sensor posts before the lake records (a lake commit waits for the writers' turn, behind a streaming
chunk). The outbox's promise still holds: the alerts are written here before the post, and again with each post's
outcome after it; the file goes once ``gold.alerts`` holds them. A sensor that stopped in between leaves the file, and
its next batch records what it holds first (:func:`recover`): with the outcome when it was written, else ``failed``
"outcome unknown" (Slack may or may not have the message, and posting again could double it). Nothing is posted twice,
nothing is forgotten. Only the market alert sensor writes and recovers it, one tick at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from cryptoflow_dagster.alerting import outbox
from cryptoflow_dagster.alerting.model import FAILED, Alert

log = logging.getLogger(__name__)

UNKNOWN = "delivery outcome unknown: the sender stopped during the post"


class RecentlyPosted:
    """The alerts this process posted within the last ``keep_s`` seconds (by when they were posted): what the check
    before the next post counts as stored even when a read of ``gold.alerts`` does not show them yet (see
    ``outbox.unrecorded``). Kept as long as the longest cooldown, so that a repeat inside it is still dropped."""

    def __init__(self, keep_s: float = 3600.0) -> None:
        self.keep_s = keep_s
        self._posted: deque[tuple[float, Alert]] = deque()

    def add(self, alerts: list[Alert], now: float) -> None:
        self._posted.extend((now, a) for a in alerts)

    def alerts(self, now: float) -> list[Alert]:
        while self._posted and self._posted[0][0] < now - self.keep_s:
            self._posted.popleft()
        return [a for _, a in self._posted]


def path_for(home: Path) -> Path:
    return home / "alerts-in-flight.json"


def write(path: Path, alerts: list[Alert], outcomes: list[outbox.Settled] | None = None) -> None:
    """Replace the file with ``alerts`` (and their outcomes, once posted), synced: atomic on a crash."""
    doc = {"alerts": [asdict(a) for a in alerts],
           "outcomes": [asdict(o) for o in outcomes] if outcomes is not None else None}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, default=_iso)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


def recover(con: duckdb.DuckDBPyConnection, path: Path) -> list[Alert]:
    """Record the alerts a stopped sender left in ``path`` (see the module), then remove it; return those recorded."""
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        alerts = [_alert_of(d) for d in doc["alerts"]]
    except (ValueError, KeyError, TypeError) as exc:  # written atomically by write(): only a hand could break it
        kept = path.with_name(f"{path.name}.unreadable-{int(time.time())}")
        os.replace(path, kept)
        log.error("market alerts in flight could not be read (%s): kept as %s for a person to look at; the sensor "
                  "goes on without them", exc, kept)
        return []
    if doc["outcomes"] is not None:
        outcomes = [outbox.Settled(**{**o, "retry_at": _when(o["retry_at"])}) for o in doc["outcomes"]]
    else:
        outcomes = [outbox.Settled(a.alert_id, FAILED, UNKNOWN) for a in alerts]
    recorded = outbox.record_posted(con, alerts, outcomes, now=datetime.now(timezone.utc))
    log.warning("recorded %d market alerts a stopped sensor had in flight (%s)", len(recorded),
                "outcomes known" if doc["outcomes"] is not None else "outcome unknown: not posted again")
    clear(path)
    return recorded


def _alert_of(d: dict) -> Alert:
    return Alert(**{**d, "triggered_at": _when(d["triggered_at"]), "event_time": _when(d["event_time"])})


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)  # details_json stores str() of the rest


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
