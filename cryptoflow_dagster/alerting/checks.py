"""Failed and recovered asset checks as alerts: one per failing (check, partition), one more when it passes again.

Pure logic over check evaluations (oldest first) and the set of keys already known to be failing; the sensor in
``defs/alerts/check_sensor.py`` reads the evaluations from the Dagster instance and keeps that set in its cursor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptoflow_dagster.alerting.model import Alert


@dataclass(frozen=True)
class CheckEvaluation:
    asset_path: tuple[str, ...]
    check_name: str
    partition: str | None
    passed: bool
    record_id: int
    run_id: str
    severity: str = "ERROR"
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{'/'.join(self.asset_path)}:{self.check_name}|{self.partition or ''}"

    @property
    def label(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{'.'.join(self.asset_path)} / {self.check_name}{where}"


def asset_link(asset_path: tuple[str, ...]) -> str:
    return f"/assets/{'/'.join(asset_path)}?view=checks"


def check_transitions(
    failing: set[str], evaluations: list[CheckEvaluation], now: datetime
) -> tuple[set[str], list[Alert]]:
    """Alerts for state changes only: a check that keeps failing is reported once, its recovery once."""
    failing = set(failing)
    alerts: list[Alert] = []
    for ev in sorted(evaluations, key=lambda e: e.record_id):
        if not ev.passed and ev.key not in failing:
            failing.add(ev.key)
            fields = {"Asset": ".".join(ev.asset_path), "Check": ev.check_name, "Severity": ev.severity}
            if ev.partition:
                fields["Partition"] = ev.partition
            fields.update({k: v[:200] for k, v in list(ev.metadata.items())[:10 - len(fields)]})
            alerts.append(Alert(
                rule="check_failed", market=None, exchange=None, triggered_at=now, event_time=None,
                dedupe_key=f"check_failed:{ev.key}:{ev.record_id}",
                message=f"Asset check failed: {ev.label}" + (f": {ev.description}" if ev.description else ""),
                details={"title": f"Check failed: {ev.label}"[:150], "fields": fields, "link": asset_link(ev.asset_path),
                         "sections": [f"Run `{ev.run_id}`"]},
            ))
        elif ev.passed and ev.key in failing:
            failing.discard(ev.key)
            alerts.append(Alert(
                rule="check_recovered", triggered_at=now,
                dedupe_key=f"check_recovered:{ev.key}:{ev.record_id}",
                message=f"Asset check passes again: {ev.label}",
                details={"title": f"Recovered: {ev.label}"[:150], "link": asset_link(ev.asset_path),
                         "fields": {"Asset": ".".join(ev.asset_path), "Check": ev.check_name,
                                    **({"Partition": ev.partition} if ev.partition else {})}},
            ))
    return failing, alerts
