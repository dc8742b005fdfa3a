"""`cryptoflow query` through the real console script: table/CSV/JSON output of a populated lake, consistent reads while
another process writes, writes refused, SQL errors as exit code 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from cryptoflow_dagster import lake

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")
FEAR_GREED = pl.DataFrame(
    {
        "day": [date(2025, 9, 1), date(2025, 9, 2), date(2025, 9, 3)],
        "value": [44, 51, 71],
        "classification": ["Fear", "Neutral", "Greed"],
    }
)
SQL = "SELECT day, value, classification FROM silver.fear_greed ORDER BY day"


def cryptoflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # the environment (CRYPTOFLOW_HOME) is the test's, set by the cryptoflow_home fixture
    return subprocess.run([CRYPTOFLOW, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def populated(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: lake.insert(c, "silver.fear_greed", FEAR_GREED))
    return settings


def test_table_csv_and_json_show_the_rows(populated):
    table = cryptoflow("query", SQL)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["day", "|", "value", "|", "classification"]
    assert lines[2].split(" | ") == ["2025-09-01", "   44", "Fear"]
    assert lines[-1] == "(3 rows)"

    as_csv = cryptoflow("query", SQL, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["day", "value", "classification"],
        ["2025-09-01", "44", "Fear"],
        ["2025-09-02", "51", "Neutral"],
        ["2025-09-03", "71", "Greed"],
    ]

    as_json = cryptoflow("query", SQL, "-f", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [
        {"day": "2025-09-01", "value": 44, "classification": "Fear"},
        {"day": "2025-09-02", "value": 51, "classification": "Neutral"},
        {"day": "2025-09-03", "value": 71, "classification": "Greed"},
    ]


def test_writes_are_refused_and_change_nothing(populated):
    for statement in (
        "INSERT INTO silver.fear_greed (day, value, classification) VALUES ('2025-09-04', 1, 'Fear')",
        "SELECT 1; DELETE FROM silver.fear_greed",  # a write hidden after a read is refused too
    ):
        result = cryptoflow("query", statement)
        assert result.returncode == 2, (statement, result.stdout)
        assert "read-only" in result.stderr
    assert cryptoflow("query", "SELECT count(*) AS n, sum(value) AS s FROM silver.fear_greed", "-f", "csv").stdout == (
        "n,s\n3,166\n"
    )


def test_sql_errors_exit_2_with_the_reason(populated):
    result = cryptoflow("query", "SELECT * FROM silver.no_such_table")
    assert result.returncode == 2
    assert "no_such_table" in result.stderr and "Traceback" not in result.stderr
    assert cryptoflow("query", "SELEC 1").returncode == 2


def test_no_lake_yet_is_a_clear_error(settings):
    result = cryptoflow("query", "SELECT 1")
    assert result.returncode == 1
    assert "no lake at" in result.stderr


WRITER = r"""
import sys
from datetime import datetime, timezone
import polars as pl
from cryptoflow_dagster import lake
batches, rows = int(sys.argv[1]), int(sys.argv[2])
con = lake.connect()
print("ready", flush=True)
sys.stdin.readline()
for b in range(batches):
    now = datetime.now(timezone.utc)
    frame = pl.DataFrame({"exchange": ["upbit"] * rows, "market": ["KRW-BTC"] * rows,
        "trade_id": [b * rows + i for i in range(rows)], "ts": [now] * rows, "price": [1.0] * rows,
        "volume": [1.0] * rows, "quote_volume": [1.0] * rows, "side": ["sell"] * rows, "ingest_time": [now] * rows})
    lake.write(con, lambda c: lake.insert(c, "silver.trades", frame))
print("done", flush=True)
"""


def test_query_reads_whole_commits_while_another_process_writes(populated):
    batches, rows = 30, 50
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(batches), str(rows)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        seen = []
        while writer.poll() is None and len(seen) < 3:
            result = cryptoflow("query", "SELECT count(*) AS n FROM silver.trades", "-f", "json")
            assert result.returncode == 0, result.stderr
            seen.append(json.loads(result.stdout)[0]["n"])
        done = writer.stdout.readline().strip()
        assert done == "done", f"writer exited with {writer.wait(timeout=60)}: {writer.stderr.read()}"
        assert writer.wait(timeout=300) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert seen, "the writer finished before any query ran"
    # every read saw whole commits only, and never went back in time
    assert all(n % rows == 0 for n in seen), seen
    assert seen == sorted(seen)
    final = cryptoflow("query", "SELECT count(*) AS n, count(DISTINCT trade_id) AS d FROM silver.trades", "-f", "json")
    assert json.loads(final.stdout) == [{"n": batches * rows, "d": batches * rows}]


def test_output_is_never_mixed_with_a_progress_bar(populated):
    # DuckDB prints a progress bar on stdout for queries slower than 2 s (common on a loaded machine): it would corrupt
    # CSV/JSON output, so the lake connection turns it off.
    result = cryptoflow("query", "SELECT current_setting('enable_progress_bar') AS bar", "-f", "json")
    assert json.loads(result.stdout) == [{"bar": False}]
