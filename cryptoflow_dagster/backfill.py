"""``cryptoflow backfill --start D --end D [--markets ...]``: the UI's backfill, launched and followed from a terminal.

``DagsterGraphQLClient`` has no backfill call, so this speaks the webserver's own GraphQL: the
``launchPartitionBackfill`` mutation the UI sends, then ``partitionBackfillOrError`` until the backfill ends.
It needs nothing but httpx and rich, so the command starts in well under a second.

While it waits it shows the asset partitions done out of those targeted (Dagster's own counts), the exchange REST
requests the backfill's runs made so far, the pace in asset partitions a minute and an ETA at that pace: a rich progress
bar on a terminal, a plain line at most every ``--progress-every`` seconds anywhere else (CI logs, pipes). The requests
are what ``bronze/candles_raw`` reports: its log line after each day (``..., N requests (...)``) while a run works, its
materialization metadata ``requests`` when the run is done; they read from each run's event log over GraphQL. When the
backfill ends a table sums each run up: days, status, asset partitions, duration, candle rows, requests, HTTP 429s.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, TextIO

import httpx

from cryptoflow_dagster.batch.collect import exchange_of
from cryptoflow_core.settings import SettingsError, load_settings, validate_market

# The batch half of the graph: bronze collection and the silver tables built from it.
BATCH_ASSETS = (
    ("bronze", "candles_raw"),
    ("bronze", "fear_greed_raw"),
    ("silver", "candles_1m"),
    ("silver", "candles_1d"),
    ("silver", "fear_greed"),
)
CANDLES_OP = "bronze__candles_raw"
# Each backfill run executes its five steps one after another in the run's own process: the code location's default
# executor is in-process (definitions.py), for backfills from the UI as from here (ADR 0008).
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
SUCCESS = {"COMPLETED", "COMPLETED_SUCCESS"}
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}  # a run's, not the backfill's

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
      runs(limit: 1000) { runId status }
    }
    ... on Error { message }
  }
}"""

# One run's events after a cursor: the candle asset's log lines (requests so far) and the materializations (asset
# partitions done, and the candle asset's rows/requests metadata).
RUN_EVENTS = """
query RunEvents($runId: ID!, $cursor: String) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId status startTime endTime
      tags { key value }
      eventConnection(afterCursor: $cursor, limit: 1000) {
        cursor hasMore
        events {
          __typename
          ... on MessageEvent { message }
          ... on MaterializationEvent {
            assetKey { path } partition
            metadataEntries { label ... on JsonMetadataEntry { jsonString } ... on IntMetadataEntry { intRepr } }
          }
        }
      }
    }
    ... on Error { message }
  }
}"""
CANDLES_KEY = ["bronze", "candles_raw"]
# bronze/candles_raw logs this after each day: "bronze.candles_raw 3/5 days (2025-09-03): ..., 84 requests (2.1/s)"
CANDLES_LOG = re.compile(r"bronze\.candles_raw \d+/\d+ days .*?\b(\d+) requests\b")


class BackfillError(RuntimeError):
    """The webserver refused or could not be reached; the message says what to check."""


@dataclass(frozen=True)
class Progress:
    status: str
    materialized: int
    failed: int
    targeted: int
    runs: dict[str, int]  # runs by status
    error: str | None = None
    run_ids: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in DONE

    def counting(self, runs: Iterable[RunReport]) -> Progress:
        """Dagster updates its counts when the backfill daemon ticks, a while after a run materialized: the runs' own
        materializations are counted too, and the larger figure shows."""
        seen = len(set().union(*(r.partitions for r in runs)))
        return replace(self, materialized=min(max(self.materialized, seen), self.targeted - self.failed))

    @property
    def finished(self) -> int:
        """Asset partitions that are through, materialized or failed: what the bar counts."""
        return self.materialized + self.failed

    def runs_text(self) -> str:
        return ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.runs.items())) or "none yet"


@dataclass
class RunReport:
    """What one run of the backfill did, from its event log."""

    run_id: str
    status: str = "QUEUED"
    first_day: str | None = None
    last_day: str | None = None
    start: float | None = None
    end: float | None = None
    partitions: set[tuple[str, str]] = field(default_factory=set)  # (asset, partition) materialized
    candle_rows: int | None = None
    requests: int | None = None  # bronze/candles_raw: the last figure logged, then its materialization's total
    responses_429: int | None = None
    cursor: str | None = None
    complete: bool = False  # the run ended and its event log was read to the end
    # bronze/candles_raw materialized: its metadata has the run's final figures, later log lines do not count
    _candles_done: bool = field(default=False, repr=False)

    @property
    def days(self) -> str:
        if self.first_day is None:
            return "-"
        return self.first_day if self.first_day == self.last_day else f"{self.first_day}..{self.last_day}"

    def duration(self, now: float) -> float | None:
        return None if self.start is None else (self.end or now) - self.start

    def read(self, run: dict[str, Any]) -> None:
        """Take in one page of :data:`RUN_EVENTS`."""
        self.status = run["status"]
        self.start, self.end = run.get("startTime"), run.get("endTime")
        tags = {t["key"]: t["value"] for t in run.get("tags") or []}
        self.first_day = tags.get("dagster/asset_partition_range_start", tags.get("dagster/partition"))
        self.last_day = tags.get("dagster/asset_partition_range_end", self.first_day)
        events = run["eventConnection"]
        self.cursor = events["cursor"]
        for event in events["events"]:
            if event.get("__typename") == "MaterializationEvent":
                key = event["assetKey"]["path"]
                self.partitions.add(("/".join(key), event.get("partition") or ""))
                if key == CANDLES_KEY:
                    self._read_candle_metadata(event.get("metadataEntries") or [])
            elif not self._candles_done and event.get("__typename") == "LogMessageEvent":
                match = CANDLES_LOG.search(event.get("message") or "")
                if match:  # the run's requests so far, after its latest day
                    self.requests = int(match.group(1))

    def _read_candle_metadata(self, entries: list[dict[str, Any]]) -> None:
        # The asset reports its run's totals on every partition it materialized: the same figures, taken once.
        self._candles_done = True
        values = {e["label"]: e.get("jsonString", e.get("intRepr")) for e in entries}
        if values.get("rows") is not None:
            self.candle_rows = int(values["rows"])
        if values.get("requests") is not None:
            self.requests = sum(json.loads(values["requests"]).values())
        if values.get("responses_429") is not None:
            self.responses_429 = sum(json.loads(values["responses_429"]).values())


@dataclass(frozen=True)
class Pace:
    """Asset partitions a minute since the backfill was launched, and the time the rest take at that pace."""

    elapsed_s: float
    per_min: float | None
    eta_s: float | None

    @classmethod
    def of(cls, progress: Progress, elapsed_s: float) -> Pace:
        if progress.done:
            return cls(elapsed_s, progress.finished / max(elapsed_s, 1e-9) * 60 if progress.finished else None, 0.0)
        if not progress.finished or elapsed_s <= 0:
            return cls(elapsed_s, None, None)
        per_s = progress.finished / elapsed_s
        return cls(elapsed_s, per_s * 60, max(progress.targeted - progress.finished, 0) / per_s)

    @property
    def rate(self) -> str:
        return "-" if self.per_min is None else f"{self.per_min:.1f}"

    @property
    def eta(self) -> str:
        return "?" if self.eta_s is None else _clock(self.eta_s)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def requests_so_far(runs: Iterable[RunReport]) -> int | None:
    figures = [r.requests for r in runs if r.requests is not None]
    return sum(figures) if figures else None


def progress_line(progress: Progress, runs: Iterable[RunReport], pace: Pace) -> str:
    """The plain progress line (no terminal): status, asset partitions, runs, requests, pace, ETA."""
    requests = requests_so_far(runs)
    return (
        f"{progress.status:<17} asset partitions {progress.materialized}/{progress.targeted} materialized, "
        f"{progress.failed} failed | runs: {progress.runs_text()} | "
        f"requests: {'-' if requests is None else requests} | {pace.rate} asset partitions/min | ETA {pace.eta}"
    )


def partition_keys(start: date, end: date) -> list[str]:
    if end < start:
        raise BackfillError(f"--end {end} is before --start {start}")
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def backfill_params(start: date, end: date, markets: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "partitionNames": partition_keys(start, end),
        "assetSelection": [{"path": list(key)} for key in BATCH_ASSETS],
        "title": f"cryptoflow backfill {start}..{end}" + (f" ({','.join(markets)})" if markets else ""),
        "tags": [{"key": "cryptoflow/launched_by", "value": "cryptoflow backfill"}],
    }
    if markets:
        # Asset jobs accept config for ops a run does not contain, so every run of the backfill can carry it.
        params["runConfigData"] = {"ops": {CANDLES_OP: {"config": {"markets": markets}}}}
    return params


def parse_progress(payload: dict[str, Any]) -> Progress:
    backfill = payload["partitionBackfillOrError"]
    if backfill.get("__typename") != "PartitionBackfill":
        raise BackfillError(f"backfill status unavailable: {backfill.get('message', backfill.get('__typename'))}")
    counts = [
        c for c in (backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses", [])
        if c.get("__typename") == "AssetPartitionsStatusCounts"
    ]
    runs: dict[str, int] = {}
    for run in backfill.get("runs") or []:
        runs[run["status"]] = runs.get(run["status"], 0) + 1
    return Progress(
        status=backfill["status"],
        materialized=sum(c["numPartitionsMaterialized"] for c in counts),
        failed=sum(c["numPartitionsFailed"] for c in counts),
        targeted=sum(c["numPartitionsTargeted"] for c in counts),
        runs=runs,
        error=(backfill.get("error") or {}).get("message"),
        run_ids=tuple(run["runId"] for run in backfill.get("runs") or []),
    )


class Webserver:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/graphql"
        self._http = httpx.Client(timeout=timeout_s)

    def query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.post(self.url, json={"query": query, "variables": variables})
        except httpx.HTTPError as exc:
            raise BackfillError(f"cannot reach the Dagster webserver at {self.url} ({exc}); is it running? (CRYPTOFLOW_UI_URL)") from exc
        if response.status_code != 200:
            raise BackfillError(f"{self.url} answered HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        if body.get("errors"):
            raise BackfillError(f"GraphQL error: {body['errors'][0].get('message')}")
        return body["data"]

    def launch(self, params: dict[str, Any]) -> str:
        result = self.query(LAUNCH, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise BackfillError(f"backfill not launched ({result['__typename']}): {result.get('message', '')}")
        return result["backfillId"]

    def progress(self, backfill_id: str) -> Progress:
        return parse_progress(self.query(STATUS, {"id": backfill_id}))

    def run_events(self, report: RunReport, max_pages: int = 20) -> None:
        """Read the run's events past the report's cursor into it (a page of 1000 at a time)."""
        for _ in range(max_pages):
            run = self.query(RUN_EVENTS, {"runId": report.run_id, "cursor": report.cursor})["runOrError"]
            if run.get("__typename") != "Run":
                raise BackfillError(f"run {report.run_id} unavailable: {run.get('message', run.get('__typename'))}")
            report.read(run)
            if not run["eventConnection"]["hasMore"]:
                report.complete = report.status in RUN_DONE
                return

    def close(self) -> None:
        self._http.close()


class PlainDisplay:
    """No terminal: a line when something changed, at most every ``every_s`` seconds (and one a minute regardless, so
    a log shows the command is alive), and always the last state."""

    def __init__(self, out: TextIO, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.every_s, self.clock = out, every_s, clock
        self._printed_at: float | None = None
        self._last_key: tuple | None = None

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, progress: Progress, runs: list[RunReport], pace: Pace) -> None:
        key = (progress.status, progress.materialized, progress.failed, progress.targeted,
               tuple(sorted(progress.runs.items())), requests_so_far(runs))
        now = self.clock()
        since = None if self._printed_at is None else now - self._printed_at
        changed = key != self._last_key
        if since is None or (progress.done and changed):
            due = True  # the first state and the last one always show
        elif changed:
            due = since >= self.every_s
        else:
            due = since >= max(60.0, self.every_s)  # nothing new: a sign of life once a minute
        if due:
            print(f"[{pace.elapsed_s:6.1f}s] {progress_line(progress, runs, pace)}", file=self.out, flush=True)
            self._printed_at, self._last_key = now, key


class BarDisplay:
    """A terminal: a rich progress bar, redrawn in place."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, SpinnerColumn, TextColumn
        from rich.progress import TimeElapsedColumn

        self.bar = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("asset partitions, {task.fields[failed]} failed"),
            TextColumn("| runs: {task.fields[runs]}"),
            TextColumn("| {task.fields[requests]} requests"),
            TextColumn("| {task.fields[rate]}/min"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task = self.bar.add_task("backfill", total=None, status="REQUESTED", failed=0, runs="none yet",
                                      requests="-", rate="-", eta="?")

    def __enter__(self) -> BarDisplay:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, progress: Progress, runs: list[RunReport], pace: Pace) -> None:
        requests = requests_so_far(runs)
        self.bar.update(
            self.task, total=progress.targeted or None, completed=progress.finished, status=progress.status,
            failed=progress.failed, runs=progress.runs_text(), requests="-" if requests is None else requests,
            rate=pace.rate, eta=pace.eta,
        )


def console_for(out: TextIO) -> Any:
    """rich's own terminal detection for a terminal; plain text (no escape codes, whatever FORCE_COLOR says) else."""
    from rich.console import Console

    isatty = getattr(out, "isatty", None)
    if isatty is not None and isatty():
        return Console(file=out, highlight=False)
    return Console(file=out, force_terminal=False, color_system=None, width=400, highlight=False)


def follow(
    server: Webserver,
    backfill_id: str,
    *,
    out: TextIO,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    progress_every_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Progress, list[RunReport]]:
    """Show progress until the backfill ends (or ``timeout_s`` passes); the final state and what each run did."""
    console = console_for(out)
    # A dumb terminal (TERM=dumb: an editor's shell, some CI) cannot redraw a bar in place: it gets the plain lines.
    live = console.is_terminal and not console.is_dumb_terminal
    display = BarDisplay(console) if live else PlainDisplay(out, progress_every_s)
    started = time.monotonic()
    reports: dict[str, RunReport] = {}
    with display:
        while True:
            progress = server.progress(backfill_id)
            for run_id in progress.run_ids:
                report = reports.setdefault(run_id, RunReport(run_id))
                if not report.complete:
                    server.run_events(report)
            runs = sorted(reports.values(), key=lambda r: (r.first_day or "", r.start or 0))
            progress = progress.counting(runs)
            display.update(progress, runs, Pace.of(progress, time.monotonic() - started))
            if progress.done:
                return progress, runs
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise BackfillError(f"backfill {backfill_id} still {progress.status} after {timeout_s:.0f}s")
            sleep(poll_s)


def summary_table(progress: Progress, runs: list[RunReport], elapsed_s: float) -> Any:
    """Each run and the totals: days, status, asset partitions materialized, duration, candle rows, requests, 429s."""
    from rich import box
    from rich.table import Table

    now = time.time()
    table = Table(title="backfill summary", title_justify="left", box=box.SIMPLE, show_edge=False, show_footer=True,
                  footer_style="bold")

    def figure(values: list[int | None]) -> str:
        known = [v for v in values if v is not None]
        return f"{sum(known):,}" if known else "-"

    def duration(seconds: float | None) -> str:
        return "-" if seconds is None else _clock(seconds)

    days = sorted({d for r in runs for d in (r.first_day, r.last_day) if d})
    columns = [
        ("run", "total", "left"),
        ("days", "-" if not days else days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}", "left"),
        ("status", progress.status, "left"),
        ("asset partitions", f"{progress.materialized}/{progress.targeted}", "right"),
        ("duration", duration(elapsed_s), "right"),
        ("candle rows", figure([r.candle_rows for r in runs]), "right"),
        ("requests", figure([r.requests for r in runs]), "right"),
        ("429s", figure([r.responses_429 for r in runs]), "right"),
    ]
    for header, footer, justify in columns:
        table.add_column(header, footer=footer, justify=justify, overflow="fold")
    for r in runs:
        table.add_row(r.run_id[:8], r.days, r.status, str(len(r.partitions)), duration(r.duration(now)),
                      figure([r.candle_rows]), figure([r.requests]), figure([r.responses_429]))
    return table


def _markets(text: str | None) -> list[str] | None:
    if not text:
        return None
    markets = [m.strip() for m in text.split(",") if m.strip()]
    for market in markets:
        validate_market(exchange_of(market), market)
    return markets


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="cryptoflow backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, type=date.fromisoformat, help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--end", required=True, type=date.fromisoformat, help="last UTC day (inclusive)")
    parser.add_argument("--markets", help="comma-separated Upbit codes / Binance symbols; default: every configured market")
    parser.add_argument("--url", default=None, help="Dagster webserver (default: CRYPTOFLOW_UI_URL)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=None, help="give up following after this many seconds")
    parser.add_argument("--progress-every", type=float, default=5.0, metavar="SECONDS",
                        help="not on a terminal: at most one progress line this often (default: 5)")
    parser.add_argument("--no-follow", action="store_true", help="launch and print the backfill id only")
    args = parser.parse_args(argv)
    try:
        markets = _markets(args.markets)
        server = Webserver(args.url or load_settings().ui_url)
        try:
            backfill_id = server.launch(backfill_params(args.start, args.end, markets))
            print(f"backfill {backfill_id} launched: {args.start}..{args.end}, markets: {', '.join(markets or ['all configured'])}", file=out, flush=True)
            if args.no_follow:
                return 0
            started = time.monotonic()
            final, runs = follow(server, backfill_id, out=out, poll_s=args.poll, timeout_s=args.timeout,
                                 progress_every_s=args.progress_every)
            console_for(out).print(summary_table(final, runs, time.monotonic() - started))
        finally:
            server.close()
    except (BackfillError, SettingsError) as exc:
        print(f"cryptoflow backfill: {exc}", file=sys.stderr)
        return 2
    if final.status in SUCCESS and final.failed == 0:
        print(f"backfill {backfill_id} succeeded", file=out)
        return 0
    print(f"backfill {backfill_id} ended {final.status}: {final.failed} asset partitions failed"
          + (f" ({final.error})" if final.error else ""), file=out)
    return 1
