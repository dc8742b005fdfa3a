"""A failed Dagster run as an outbox alert (one per run: the run id is the dedupe key)."""

from __future__ import annotations

from datetime import datetime

from cryptoflow_dagster.alerting.model import Alert


def run_failure_alert(run_id: str, job_name: str, reason: str, step_errors: list[str], now: datetime,
                      partition: str | None = None) -> Alert:
    fields = {"Job": job_name, "Run": run_id[:8]}
    if partition:
        fields["Partition"] = partition
    sections = [f"```{e[:700]}```" for e in step_errors[:3]]
    return Alert(
        rule="run_failure", triggered_at=now, event_time=now, dedupe_key=f"run_failure:{run_id}",
        message=f"Run of `{job_name}` failed: {reason[:500]}",
        details={"title": f"Run failed: {job_name}"[:150], "fields": fields, "sections": sections,
                 "link": f"/runs/{run_id}"},
    )
