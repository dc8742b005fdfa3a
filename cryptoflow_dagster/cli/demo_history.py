"""The demo's own history, built on its first start: a backfill of the demo's days, then gold.

A new user's first look at the asset graph should not be a stream and nothing else: ``gold.volatility_daily``, the
indicators and the API's daily endpoints need silver candles for past days, which only a backfill writes. So on a
start that finds the demo's days missing from ``silver.candles_1d``, the demo launches that backfill through the
webserver (the same ``launchPartitionBackfill`` the UI and ``cryptoflow backfill`` send: it shows in the UI as a
backfill), the gold automation sensor builds gold when silver lands, and a thread reports how far it has got.

The backfill's id is kept in ``$CRYPTOFLOW_HOME/demo-history.json``: a restart while it runs follows it instead of
launching another; a failed or canceled one is launched again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from cryptoflow_core.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "demo-history.json"
TITLE = "cryptoflow demo: first-start history"
POLL_S = 10.0
FAILED = {"FAILED", "CANCELED", "COMPLETED_FAILED", "CANCELING"}


@dataclass(frozen=True)
class Coverage:
    """How much of the demo's days the lake holds, by layer."""

    days: int  # the demo's days (history start through yesterday)
    silver_days: int  # of them in silver.candles_1d
    gold_days: int  # of them in gold.volatility_daily (0 before dbt first ran: the table is dbt's)

    @property
    def complete(self) -> bool:
        return self.silver_days >= self.days and self.gold_days >= self.days


def history_days(start: date, today: date) -> tuple[date, date]:
    """The demo's past days: the daily partitions from ``start`` through yesterday (today is the stream's)."""
    return start, max(start, today - timedelta(days=1))


def coverage(settings: Settings, start: date, end: date) -> Coverage:
    from cryptoflow_dagster import lake

    days = (end - start).days + 1
    with lake.session(settings, read_only=True) as con:
        silver = con.execute(
            "SELECT count(DISTINCT day) FROM silver.candles_1d WHERE day BETWEEN ? AND ?", [start, end]
        ).fetchone()[0]
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'gold' "
            "AND table_name = 'volatility_daily'"
        ).fetchone()[0]
        gold = con.execute(
            "SELECT count(DISTINCT day) FROM gold.volatility_daily WHERE day BETWEEN ? AND ?", [start, end]
        ).fetchone()[0] if exists else 0
    return Coverage(days, silver, gold)


def _read_state(home: Path) -> dict | None:
    try:
        return json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_backfill(settings: Settings, ui_url: str, start: date, end: date) -> tuple[str | None, str]:
    """Launch the history backfill unless silver holds the demo's days or an earlier one is still going.
    Returns (backfill id or None, a sentence for the banner)."""
    from cryptoflow_dagster.backfill import Webserver, backfill_params

    have = coverage(settings, start, end)
    if have.silver_days >= have.days:
        return None, f"{have.days} days in silver, {have.gold_days} in gold (built on an earlier start)"
    web = Webserver(ui_url)
    try:
        state = _read_state(settings.home)
        if state and state.get("start") == start.isoformat() and state.get("end") == end.isoformat():
            status = web.progress(state["backfill_id"]).status
            if status not in FAILED:
                return state["backfill_id"], f"backfill {state['backfill_id']} of {have.days} days: {status.lower()}"
        params = backfill_params(start, end, None)
        params["title"] = f"{TITLE} {start}..{end}"
        params["tags"] = [{"key": "cryptoflow/launched_by", "value": "cryptoflow demo"}]
        backfill_id = web.launch(params)
    finally:
        web.close()
    (settings.home / STATE_FILE).write_text(json.dumps({
        "backfill_id": backfill_id, "start": start.isoformat(), "end": end.isoformat(),
        "launched_at": datetime.now(timezone.utc).isoformat(),
    }))
    log.info("launched the demo's history backfill %s (%s..%s)", backfill_id, start, end)
    return backfill_id, f"backfill {backfill_id} of {have.days} days launched; gold follows"


class HistoryReporter:
    """Prints a line whenever the history's progress changes, until silver and gold hold every demo day (or the
    backfill failed). On a thread: the supervisor never waits for the webserver or the lake."""

    def __init__(self, settings: Settings, ui_url: str, backfill_id: str | None, start: date, end: date,
                 say: Callable[[str], None] = lambda line: print(line, flush=True), poll_s: float = POLL_S) -> None:
        self.settings, self.ui_url, self.backfill_id = settings, ui_url, backfill_id
        self.start, self.end, self.say, self.poll_s = start, end, say, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-history", daemon=True)

    def start_reporting(self) -> HistoryReporter:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _loop(self) -> None:
        from cryptoflow_dagster.backfill import Webserver

        web = Webserver(self.ui_url, timeout_s=10.0)
        last, started = "", time.monotonic()
        try:
            while not self._stop.wait(self.poll_s):
                try:
                    have = coverage(self.settings, self.start, self.end)
                    status = web.progress(self.backfill_id).status if self.backfill_id else "COMPLETED"
                except Exception as exc:  # noqa: BLE001 - the webserver or lake busy: tried again next time
                    log.debug("history progress unavailable: %s", exc)
                    continue
                line = (f"history: {have.silver_days}/{have.days} days in silver, {have.gold_days}/{have.days} in "
                        f"gold.volatility_daily (backfill {status.lower()}, {time.monotonic() - started:.0f}s)")
                if status in FAILED:
                    self.say(f"{line}: see {self.ui_url}/overview/backfills/{self.backfill_id}")
                    return
                if line.split(" (")[0] != last:
                    self.say(line)
                    last = line.split(" (")[0]
                if have.complete:
                    self.say(f"history ready: {have.days} days in silver and gold; the API and dashboard show them")
                    return
        finally:
            web.close()
