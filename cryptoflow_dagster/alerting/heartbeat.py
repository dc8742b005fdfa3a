"""Sidecar liveness from its heartbeat file: one alert when it goes stale, one when it comes back.

The sidecar rewrites ``<landing>/_heartbeat.json`` (top-level ``updated_at``, ISO 8601 UTC) every flush; when the file has
no readable ``updated_at`` its modification time stands in, so a half-agreed shape still pages on a stopped collector.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from cryptoflow_dagster.alerting.model import Alert

log = logging.getLogger(__name__)


def read_heartbeat(path: Path) -> tuple[datetime | None, dict]:
    """(last beat time, the file's other top-level scalars), or (None, {}) when there is no file."""
    try:
        stat = path.stat()
        raw = path.read_text()
    except FileNotFoundError:
        return None, {}
    try:
        doc = json.loads(raw)
        beat = datetime.fromisoformat(str(doc["updated_at"]).replace("Z", "+00:00"))
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("heartbeat %s has no readable updated_at (%s): using its modification time", path, exc)
        return datetime.fromtimestamp(stat.st_mtime, timezone.utc), {}
    extra = {k: str(v) for k, v in doc.items() if k != "updated_at" and isinstance(v, (str, int, float, bool))}
    return beat, extra


def sidecar_transition(
    was_down: bool, beat: datetime | None, now: datetime, stale_s: float, seen_before: bool, extra: dict | None = None
) -> tuple[bool, Alert | None]:
    """(is the sidecar down now, the alert for the change if any). A sidecar never seen at all is not paged about."""
    if beat is None and not seen_before:
        return was_down, None
    age = None if beat is None else (now - beat).total_seconds()
    down = age is None or age > stale_s
    fields = {"Last heartbeat": f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "file missing",
              "Threshold": f"{stale_s:g}s", **{k: v[:100] for k, v in list((extra or {}).items())[:6]}}
    if down and not was_down:
        what = "no heartbeat file" if beat is None else f"last heartbeat {age:.0f}s ago"
        return True, Alert(
            rule="sidecar_down", triggered_at=now, event_time=beat,
            dedupe_key=f"sidecar_down:{beat.isoformat() if beat else 'missing'}",
            value=age, threshold=stale_s,
            message=f"The streaming sidecar is down: {what} (threshold {stale_s:g}s). Live trades are not being collected.",
            details={"title": "Sidecar down", "fields": fields, "link": "/automation"},
        )
    if not down and was_down:
        return False, Alert(
            rule="sidecar_recovered", triggered_at=now, event_time=beat,
            dedupe_key=f"sidecar_recovered:{beat.isoformat()}", value=age, threshold=stale_s,
            message="The streaming sidecar is back: heartbeats are fresh again.",
            details={"title": "Sidecar back", "fields": fields, "link": "/automation"},
        )
    return down, None
