"""Stale and fresh-again assets as alerts: one when an asset's freshness state turns FAIL, one when it passes again.

Pure logic over Dagster's freshness state changes (oldest first), which the freshness daemon records as events; the
sensor in ``defs/alerts/freshness_sensor.py`` reads them from the instance. A dedupe key is the asset and the moment
of the change, so reading the same change twice (a lost cursor, a restart) records nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptoflow_dagster.alerting.model import Alert

FAIL = "FAIL"
# A state after FAIL that means fresh again. UNKNOWN / NOT_APPLICABLE (no materialization left, policy removed) end
# the failure without a message: nothing about the data says it is fresh.
FRESH = frozenset({"PASS", "WARN"})


@dataclass(frozen=True)
class FreshnessChange:
    asset_path: tuple[str, ...]
    previous: str  # dagster FreshnessState values: PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE
    new: str
    changed_at: datetime
    policy: str | None = None  # the policy in words
    last_materialized: datetime | None = None

    @property
    def asset(self) -> str:
        return ".".join(self.asset_path)

    @property
    def key(self) -> str:
        return f"{'/'.join(self.asset_path)}|{self.changed_at.timestamp():.6f}"


def asset_link(asset_path: tuple[str, ...]) -> str:
    return f"/assets/{'/'.join(asset_path)}"


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    minutes = max(0.0, (now - moment).total_seconds() / 60)
    ago = f"{minutes:.0f} min ago" if minutes < 120 else f"{minutes / 60:.1f} h ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({ago})"


def freshness_alerts(changes: list[FreshnessChange], now: datetime) -> list[Alert]:
    """One alert per change into FAIL (``asset_stale``) and per change from FAIL to fresh (``asset_fresh``)."""
    alerts: list[Alert] = []
    for ch in sorted(changes, key=lambda c: c.changed_at):
        fields = {"Asset": ch.asset, "State": f"{ch.previous} -> {ch.new}",
                  "Last materialized": _when(ch.last_materialized, now)}
        if ch.policy:
            fields["Freshness policy"] = ch.policy
        if ch.new == FAIL and ch.previous != FAIL:
            alerts.append(Alert(
                rule="asset_stale", triggered_at=now, event_time=ch.changed_at,
                dedupe_key=f"asset_stale:{ch.key}",
                message=f"Asset {ch.asset} is stale: last materialized {_when(ch.last_materialized, now)}"
                        + (f"; policy: {ch.policy}" if ch.policy else ""),
                details={"title": f"Stale: {ch.asset}"[:150], "fields": fields, "link": asset_link(ch.asset_path)},
            ))
        elif ch.previous == FAIL and ch.new in FRESH:
            alerts.append(Alert(
                rule="asset_fresh", triggered_at=now, event_time=ch.changed_at,
                dedupe_key=f"asset_fresh:{ch.key}",
                message=f"Asset {ch.asset} is fresh again: last materialized {_when(ch.last_materialized, now)}",
                details={"title": f"Fresh again: {ch.asset}"[:150], "fields": fields, "link": asset_link(ch.asset_path)},
            ))
    return alerts
