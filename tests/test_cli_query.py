"""`cryptoflow query` through the real console script: table/CSV/JSON output of a populated lake, consistent reads while
another process writes, writes refused, SQL errors as exit code 2."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from cryptoflow_dagster import lake
from lake_writer import lake_writer

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
    assert lines[0].split() == ["day", "│", "value", "│", "classification"]
    assert [c.strip() for c in lines[2].split("│")] == ["2025-09-01", "44", "Fear"]
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


def test_query_reads_whole_commits_while_another_process_writes(populated):
    batches, rows = 30, 50
    with lake_writer(batches, rows, "upbit", "KRW-BTC") as writer:
        seen = []
        while writer.poll() is None and len(seen) < 3:
            result = cryptoflow("query", "SELECT count(*) AS n FROM silver.trades", "-f", "json")
            assert result.returncode == 0, result.stderr
            seen.append(json.loads(result.stdout)[0]["n"])
        done = writer.stdout.readline().strip()
        assert done == "done", f"writer exited with {writer.wait(timeout=60)}: {writer.stderr.read()}"
        assert writer.wait(timeout=300) == 0
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


def _rules(line: str) -> list[int]:
    return [i for i, ch in enumerate(line) if ch in "│┼"]


def test_table_columns_line_up_numbers_right_nulls_spelled_out_nothing_cut(populated):
    """Piped (not a terminal): every row's column rules sit under the header's, numbers end on the same column, a NULL
    reads NULL, a long value is printed whole on its line, and no escape code appears even when FORCE_COLOR asks."""
    sql = ("SELECT f.day, f.value, g.value AS value_before, f.classification, "
           "CASE WHEN f.value > 60 THEN repeat('greed ', 40) END AS note "
           "FROM silver.fear_greed f LEFT JOIN silver.fear_greed g ON g.day = f.day - 1 ORDER BY f.day")
    result = subprocess.run([CRYPTOFLOW, "query", sql], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "FORCE_COLOR": "1", "COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    header, rule, *rows, count = result.stdout.splitlines()
    assert count == "(3 rows)" and len(rows) == 3
    assert set(rule.strip()) == {"─", "┼"}
    assert all(_rules(row) == _rules(header) == _rules(rule) for row in rows), result.stdout
    cells = [[c.strip() for c in row.split("│")] for row in rows]
    assert [c[:4] for c in cells] == [
        ["2025-09-01", "44", "NULL", "Fear"],
        ["2025-09-02", "51", "44", "Neutral"],
        ["2025-09-03", "71", "51", "Greed"],
    ]
    assert [c[4] for c in cells] == ["NULL", "NULL", ("greed " * 40).strip()]
    # numbers (and their headers) are right-aligned: each numeric column's text ends where its rule starts
    bounds = _rules(header)
    for line in [header, *rows]:
        for column in (1, 2):
            assert line[bounds[column] - 2] != " ", line
    # a text column starts right after its rule
    assert all(row[bounds[2] + 2] != " " for row in rows)


def test_a_terminal_gets_colour_and_its_width_and_folds_instead_of_cutting(populated):
    """On a terminal (a real pty) rich styles the header and fits the table to COLUMNS: a long value folds over several
    lines of its cell and every character of it is still there."""
    long_value = "".join(chr(ord("a") + i % 26) for i in range(150))
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "40", "LINES": "50", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([CRYPTOFLOW, "query", f"SELECT 7 AS n, '{long_value}' AS long_text"], stdout=child,
                            stderr=subprocess.PIPE, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    _, err = proc.communicate(timeout=120)  # reaps it and closes its stderr pipe
    assert proc.returncode == 0, err
    raw = b"".join(chunks).decode()
    assert "\x1b[" in raw  # styled
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw).replace("\r\n", "\n")
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines), text
    body = [line for line in lines[2:] if "│" in line]
    assert len(body) > 3  # folded over several lines
    assert "".join(line.split("│")[1].strip() for line in body) == long_value
    assert lines[-1] == "(1 row)"
