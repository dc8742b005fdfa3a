"""``cryptoflow backfill --start D --end D [--markets ...]``: the UI's backfill, launched and followed from a terminal.

``DagsterGraphQLClient`` has no backfill call, so this speaks the webserver's own GraphQL: the
``launchPartitionBackfill`` mutation the UI sends, then ``partitionBackfillOrError`` until the backfill ends.
It needs nothing but httpx, so the command starts in well under a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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


class BackfillError(RuntimeError):
    """The webserver refused or could not be reached; the message says what to check."""


@dataclass(frozen=True)
class Progress:
    status: str
    materialized: int
    failed: int
    targeted: int
    runs: dict[str, int]
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE

    def line(self) -> str:
        runs = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.runs.items())) or "none yet"
        return (
            f"{self.status:<17} asset partitions {self.materialized}/{self.targeted} materialized, "
            f"{self.failed} failed | runs: {runs}"
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

    def close(self) -> None:
        self._http.close()


def follow(
    server: Webserver,
    backfill_id: str,
    *,
    out: TextIO,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Progress:
    """Print a progress line whenever it changes, until the backfill ends (or ``timeout_s`` passes)."""
    started, last = time.monotonic(), ""
    while True:
        progress = server.progress(backfill_id)
        line = progress.line()
        if line != last:
            print(f"[{time.monotonic() - started:6.1f}s] {line}", file=out, flush=True)
            last = line
        if progress.done:
            return progress
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise BackfillError(f"backfill {backfill_id} still {progress.status} after {timeout_s:.0f}s")
        sleep(poll_s)


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
            final = follow(server, backfill_id, out=out, poll_s=args.poll, timeout_s=args.timeout)
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
