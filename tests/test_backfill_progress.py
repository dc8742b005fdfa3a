"""`cryptoflow backfill`'s progress and summary, fed the GraphQL shapes the webserver answers with (the end-to-end run
against a real webserver is tests/test_ui_backfill_browser.py): what the runs' event logs say, the pace and ETA, how
often a plain (non-terminal) progress line is printed, and the summary table's layout."""

from __future__ import annotations

import io
import json

from cryptoflow_dagster.backfill import Pace, PlainDisplay, Progress, RunReport, console_for, summary_table

RUN = "3f2a9c10-0000-4000-8000-000000000000"


def page(status: str, events: list[dict], cursor: str = "c1") -> dict:
    return {
        "runId": RUN, "status": status, "startTime": 1000.0, "endTime": 1042.0 if status == "SUCCESS" else None,
        "tags": [{"key": "dagster/asset_partition_range_start", "value": "2025-09-01"},
                 {"key": "dagster/asset_partition_range_end", "value": "2025-09-02"}],
        "eventConnection": {"cursor": cursor, "hasMore": False, "events": events},
    }


def log(message: str) -> dict:
    return {"__typename": "LogMessageEvent", "message": message}


def materialized(asset: str, day: str, metadata: list[dict] | None = None) -> dict:
    return {"__typename": "MaterializationEvent", "assetKey": {"path": asset.split("/")}, "partition": day,
            "metadataEntries": metadata or []}


CANDLE_METADATA = [
    {"label": "rows", "intRepr": "5760"},
    {"label": "requests", "jsonString": json.dumps({"upbit": 14, "binance": 6})},
    {"label": "responses_429", "jsonString": json.dumps({"upbit_429": 1, "binance_429": 0})},
]


def test_a_run_report_follows_requests_from_the_log_then_takes_the_metadata_totals():
    report = RunReport(RUN)
    report.read(page("STARTED", [
        log("bronze.candles_raw 1/2 days (2025-09-01): 2880 candles for 2 markets, 3.1s elapsed, 9 requests (2.9/s)"),
        log("something else, 99 requests"),  # not the candle asset's line: ignored
    ]))
    assert (report.requests, report.days, report.partitions) == (9, "2025-09-01..2025-09-02", set())
    report.read(page("STARTED", [
        log("bronze.candles_raw 2/2 days (2025-09-02): 2880 candles for 2 markets, 6.0s elapsed, 18 requests (3.0/s)"),
        materialized("bronze/candles_raw", "2025-09-01", CANDLE_METADATA),
        materialized("bronze/candles_raw", "2025-09-02", CANDLE_METADATA),  # the same run totals on each partition
    ], cursor="c2"))
    assert (report.requests, report.candle_rows, report.responses_429) == (20, 5760, 1)
    assert report.cursor == "c2" and len(report.partitions) == 2
    report.read(page("SUCCESS", [materialized("silver/candles_1m", d) for d in ("2025-09-01", "2025-09-02")]))
    assert len(report.partitions) == 4 and report.duration(now=0) == 42.0

    # Dagster's counts lag behind the runs (the daemon updates them on its tick): the runs' materializations show
    progress = Progress("REQUESTED", materialized=0, failed=0, targeted=10, runs={"SUCCESS": 1}).counting([report])
    assert (progress.materialized, progress.finished) == (4, 4)


def test_pace_and_eta():
    running = Progress("REQUESTED", materialized=4, failed=1, targeted=25, runs={})
    pace = Pace.of(running, elapsed_s=60)
    assert (pace.rate, pace.eta) == ("5.0", "0:04:00")  # 5 a minute, 20 to go
    assert (Pace.of(Progress("REQUESTED", 0, 0, 25, {}), 30).rate, Pace.of(Progress("REQUESTED", 0, 0, 25, {}), 30).eta) \
        == ("-", "?")
    assert Pace.of(Progress("COMPLETED_SUCCESS", 25, 0, 25, {}), 300).eta == "0:00:00"


def test_plain_progress_prints_changes_at_most_every_few_seconds_and_always_the_end():
    now = [0.0]
    out = io.StringIO()
    display = PlainDisplay(out, every_s=5, clock=lambda: now[0])

    def poll(t: float, status: str, done: int) -> None:
        now[0] = t
        progress = Progress(status, done, 0, 10, {"STARTED": 1})
        display.update(progress, [], Pace.of(progress, t))

    poll(0, "REQUESTED", 0)  # the first state: printed
    poll(1, "REQUESTED", 1)  # changed, but 1 s after the last line
    poll(2, "REQUESTED", 2)
    poll(5, "REQUESTED", 3)  # 5 s: printed, with the latest figures
    for t in range(6, 65):
        poll(t, "REQUESTED", 3)  # nothing new: one line at 65 s (a minute after the last one), none before
    poll(65, "REQUESTED", 3)
    poll(66, "COMPLETED_SUCCESS", 10)  # the end: printed at once
    lines = out.getvalue().splitlines()
    assert [line.split("]")[0].strip("[ ") for line in lines] == ["0.0s", "5.0s", "65.0s", "66.0s"]
    assert "0/10 materialized" in lines[0] and "3/10 materialized" in lines[1]
    assert lines[-1].startswith("[  66.0s] COMPLETED_SUCCESS") and "10/10 materialized" in lines[-1]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_summary_table_has_a_row_per_run_and_the_totals_aligned():
    first, second = RunReport(RUN), RunReport("9b1e0000-0000-4000-8000-000000000000")
    first.read(page("SUCCESS", [materialized("bronze/candles_raw", d, CANDLE_METADATA) for d in ("2025-09-01", "2025-09-02")]))
    second.read({**page("SUCCESS", [materialized("bronze/candles_raw", "2025-09-03", CANDLE_METADATA)]),
                 "tags": [{"key": "dagster/partition", "value": "2025-09-03"}]})
    final = Progress("COMPLETED_SUCCESS", 3, 0, 3, {"SUCCESS": 2})
    out = io.StringIO()
    console_for(out).print(summary_table(final, [first, second], elapsed_s=3725))
    text = out.getvalue()
    assert "\x1b" not in text
    title, header, rule, row1, row2, rule2, total = [line.rstrip() for line in text.splitlines()]
    assert title == "backfill summary"
    assert header.split() == ["run", "days", "status", "asset", "partitions", "duration", "candle", "rows", "requests",
                              "429s"]
    assert row1.split() == ["3f2a9c10", "2025-09-01..2025-09-02", "SUCCESS", "2", "0:00:42", "5,760", "20", "1"]
    assert row2.split() == ["9b1e0000", "2025-09-03", "SUCCESS", "1", "0:00:42", "5,760", "20", "1"]
    assert total.split() == ["total", "2025-09-01..2025-09-03", "COMPLETED_SUCCESS", "3/3", "1:02:05", "11,520", "40", "2"]
    # numbers are right-aligned: each figure ends where the header's name ends
    for name in ("partitions", "duration", "rows", "requests", "429s"):
        end = header.index(name) + len(name)
        assert all(line[end - 1] != " " and (len(line) == end or line[end] == " ") for line in (row1, row2, total)), name
