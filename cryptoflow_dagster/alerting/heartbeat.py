"""Sidecar liveness from its heartbeat file: one alert when it goes stale, one when it comes back.

The sidecar rewrites ``<landing>/_heartbeat.json`` (top-level ``updated_at``, ISO 8601 UTC) every flush; when the file has
no readable ``updated_at`` its modification time stands in, so a half-agreed shape still pages on a stopped collector.
Sharded sidecars (CRYPTOFLOW_SIDECAR_SHARD) each write ``_heartbeat.<shard>.json`` beside it: each is watched on its own,
since one live shard says nothing about the markets of a dead one.
"""

from __future__ import annotations

from datetime import datetime

from cryptoflow_dagster.alerting.model import Alert


def sidecar_transition(
    was_down: bool, beat: datetime | None, now: datetime, stale_s: float, seen_before: bool, extra: dict | None = None,
    shard: str = "",
) -> tuple[bool, Alert | None]:
    """(is the sidecar down now, the alert for the change if any). A sidecar never seen at all is not paged about."""
    if beat is None and not seen_before:
        return was_down, None
    who = f"The streaming sidecar (shard {shard})" if shard else "The streaming sidecar"
    key = f"{shard}:" if shard else ""
    title = f" (shard {shard})" if shard else ""
    age = None if beat is None else (now - beat).total_seconds()
    down = age is None or age > stale_s
    fields = {"Last heartbeat": f"{beat:%Y-%m-%d %H:%M:%S} UTC" if beat else "file missing",
              "Threshold": f"{stale_s:g}s", **{k: v[:100] for k, v in list((extra or {}).items())[:6]}}
    if down and not was_down:
        what = "no heartbeat file" if beat is None else f"last heartbeat {age:.0f}s ago"
        return True, Alert(
            rule="sidecar_down", triggered_at=now, event_time=beat,
            dedupe_key=f"sidecar_down:{key}{beat.isoformat() if beat else 'missing'}",
            value=age, threshold=stale_s,
            message=f"{who} is down: {what} (threshold {stale_s:g}s). Live trades are not being collected.",
            details={"title": f"Sidecar down{title}", "fields": fields, "link": "/automation"},
        )
    if not down and was_down:
        return False, Alert(
            rule="sidecar_recovered", triggered_at=now, event_time=beat,
            dedupe_key=f"sidecar_recovered:{key}{beat.isoformat()}", value=age, threshold=stale_s,
            message=f"{who} is back: heartbeats are fresh again.",
            details={"title": f"Sidecar back{title}", "fields": fields, "link": "/automation"},
        )
    return down, None
