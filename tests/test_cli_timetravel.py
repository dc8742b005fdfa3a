"""Time travel and restore on a real DuckLake lake, through the real console script: `cryptoflow query --snapshot N /
--as-of TIME` reads each earlier state exactly, `cryptoflow snapshots` lists the history, `cryptoflow restore` puts a
table (or the lake) back in one new snapshot, undoable by restoring the snapshot before it, and bad input changes
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from cryptoflow_dagster import lake
from lake_writer import lake_writer

CRYPTOFLOW = str(Path(sys.executable).parent / "cryptoflow")
FEAR_GREED_SQL = "SELECT day::VARCHAR AS day, value, classification FROM silver.fear_greed ORDER BY ALL"
TRADES_SQL = "SELECT exchange, market, trade_id, price, volume, side FROM silver.trades ORDER BY ALL"
FILES_SQL = "SELECT file, rows FROM ops.ingested_files ORDER BY ALL"
SQL = {"fear_greed": FEAR_GREED_SQL, "trades": TRADES_SQL, "files": FILES_SQL}


def cryptoflow(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    # CRYPTOFLOW_HOME is the test's (cryptoflow_home fixture); stdin is never a terminal here
    return subprocess.run([CRYPTOFLOW, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def read(sql: str, *options: str) -> list[dict]:
    result = cryptoflow("query", sql, "-f", "json", *options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def read_tables(*options: str) -> dict[str, list[dict]]:
    """The three tables' rows in one run of the CLI (one JSON line per statement)."""
    result = cryptoflow("query", ";\n".join(SQL.values()), "-f", "json", *options)
    assert result.returncode == 0, result.stderr
    return dict(zip(SQL, [json.loads(line) for line in result.stdout.splitlines() if line]))


def trades(ids: range, price: float) -> pl.DataFrame:
    now = datetime(2025, 9, 1, tzinfo=timezone.utc)
    n = len(ids)
    return pl.DataFrame({
        "exchange": ["upbit"] * n, "market": ["KRW-BTC"] * n, "trade_id": list(ids), "ts": [now] * n,
        "price": [price] * n, "volume": [0.5] * n, "quote_volume": [price / 2] * n, "side": ["buy"] * n,
        "ingest_time": [now] * n,
    })


def state_of(fear_greed: dict[date, tuple[int, str]], trade_frames: list[pl.DataFrame], files: list[tuple]) -> dict:
    """What the CLI's JSON output of SQL must be for a state, computed from what was written (not read back)."""
    all_trades = sorted(
        (r["exchange"], r["market"], r["trade_id"], r["price"], r["volume"], r["side"])
        for f in trade_frames for r in f.iter_rows(named=True)
    )
    return {
        "fear_greed": [{"day": d.isoformat(), "value": v, "classification": c} for d, (v, c) in sorted(fear_greed.items())],
        "trades": [dict(zip(("exchange", "market", "trade_id", "price", "volume", "side"), t)) for t in all_trades],
        "files": [{"file": f, "rows": n} for f, n in sorted(files)],
    }


@pytest.fixture
def history(settings):
    """A lake with three commits after the schema: inserts (inlined and Parquet), an update, a delete, two tables at
    once. Returns {snapshot id: expected state} and the snapshots' times, in commit order."""
    states: dict[int, dict] = {}
    times: dict[int, datetime] = {}
    fear_greed = {date(2025, 9, 1): (44, "Fear"), date(2025, 9, 2): (51, "Neutral"), date(2025, 9, 3): (71, "Greed")}
    batch1, batch2 = trades(range(0, 40), 100.0), trades(range(40, 100), 101.5)
    fg = pl.DataFrame({"day": list(fear_greed), "value": [v for v, _ in fear_greed.values()],
                       "classification": [c for _, c in fear_greed.values()]})

    def commit(con, work) -> int:
        lake.write(con, work)
        return con.execute("SELECT * FROM ducklake_last_committed_snapshot('lake')").fetchone()[0]

    with lake.session(settings) as con:
        lake.ensure_schema(con)
        s0 = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()[0]
        states[s0] = state_of({}, [], [])
        # A: fear & greed (3 rows: inlined in the catalog) and 40 trades (a Parquet file)
        a = commit(con, lambda c: (lake.insert(c, "silver.fear_greed", fg), lake.insert(c, "silver.trades", batch1)))
        states[a] = state_of(fear_greed, [batch1], [])
        # B: 60 more trades, one fear & greed day updated, a ledger row
        fear_greed_b = {**fear_greed, date(2025, 9, 2): (55, "Greed")}
        b = commit(con, lambda c: (
            lake.insert(c, "silver.trades", batch2),
            c.execute("UPDATE silver.fear_greed SET value = 55, classification = 'Greed' WHERE day = '2025-09-02'"),
            lake.insert(c, "ops.ingested_files", pl.DataFrame({
                "file": ["trade/a.parquet"], "rows": [60], "ingested_at": [datetime.now(timezone.utc)]})),
        ))
        states[b] = state_of(fear_greed_b, [batch1, batch2], [("trade/a.parquet", 60)])
        # C: a bad write: fear & greed day 1 deleted, the first batch's trades deleted
        fear_greed_c = {d: v for d, v in fear_greed_b.items() if d != date(2025, 9, 1)}
        c_ = commit(con, lambda c: (
            c.execute("DELETE FROM silver.fear_greed WHERE day = '2025-09-01'"),
            c.execute("DELETE FROM silver.trades WHERE trade_id < 40"),
        ))
        states[c_] = state_of(fear_greed_c, [batch2], [("trade/a.parquet", 60)])
        times.update(con.execute("SELECT snapshot_id, snapshot_time FROM lake.snapshots()").fetchall())
    return states, {k: times[k] for k in states}


def snapshot_rows() -> list[dict]:
    return read("SELECT snapshot_id, author, commit_message, commit_extra_info FROM lake.snapshots() ORDER BY 1")


def test_query_reads_each_earlier_state_exactly(history):
    states, times = history
    ids = sorted(states)
    for snapshot, expected in states.items():
        assert read_tables("--snapshot", str(snapshot)) == expected, snapshot
    # --as-of: a snapshot's own time, a time between two snapshots (the earlier one), naive = UTC, or with an offset
    for earlier, later in zip(ids, ids[1:]):
        at = times[earlier]
        between = at + (times[later] - at) / 2
        for as_of in (at.isoformat(), between.replace(tzinfo=None).isoformat(),
                      between.astimezone(timezone(timedelta(hours=9))).isoformat()):
            assert read_tables("--as-of", as_of) == states[earlier], as_of
    result = cryptoflow("query", "SELECT count(*) AS n FROM silver.trades", "-f", "csv", "--snapshot", str(ids[1]))
    assert result.stdout == "n\n40\n"  # the notice goes to stderr, the output stays clean
    assert f"reading the lake at snapshot {ids[1]}" in result.stderr
    # the live lake is the last state, and the snapshot sessions did not leak into it
    assert read(FEAR_GREED_SQL) == states[ids[-1]]["fear_greed"]


def test_snapshots_lists_the_history_with_what_changed(history):
    states, _ = history
    s0, a, b, c = sorted(states)
    listed = json.loads(cryptoflow("snapshots", "-f", "json", "-n", "0").stdout)
    assert [s["snapshot"] for s in listed][:3] == [c, b, a]  # newest first
    assert "inserted: silver.fear_greed, silver.trades" in listed[2]["changes"]
    for_trades = json.loads(cryptoflow("snapshots", "--table", "silver.trades", "-f", "json").stdout)
    assert [(s["snapshot"], s["rows_added"], s["rows_removed"]) for s in for_trades] == [
        (c, 0, 40), (b, 60, 0), (a, 40, 0), (s0, 0, 0)  # s0 created it
    ]
    assert [s["snapshot"] for s in json.loads(
        cryptoflow("snapshots", "--table", "ops.ingested_files", "-f", "json").stdout)] == [b, s0]


def test_restore_one_table_then_undo_it(history):
    states, _ = history
    s0, a, b, c = sorted(states)
    result = cryptoflow("restore", "--table", "silver.fear_greed", "--snapshot", str(a), "--yes")
    assert result.returncode == 0, result.stderr
    after = snapshot_rows()
    restore1 = after[-1]
    assert restore1["snapshot_id"] == c + 1 and f"new snapshot {c + 1}" in result.stdout
    assert restore1["author"] == "cryptoflow restore"
    assert restore1["commit_message"].startswith(f"restore silver.fear_greed to snapshot {a} (")
    assert json.loads(restore1["commit_extra_info"])["tables"] == ["silver.fear_greed"]
    # the table is back exactly; the others are untouched
    assert read_tables() == {**states[c], "fear_greed": states[a]["fear_greed"]}
    # time travel across the restore: before it, the bad state; the restore's snapshot, the restored one
    assert read(FEAR_GREED_SQL, "--snapshot", str(c)) == states[c]["fear_greed"]
    assert read(FEAR_GREED_SQL, "--snapshot", str(c + 1)) == states[a]["fear_greed"]
    # restoring again is a no-op (no new snapshot)
    again = cryptoflow("restore", "--table", "silver.fear_greed", "--snapshot", str(a), "--yes")
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
    assert snapshot_rows() == after
    # undo: restore the snapshot before the restore
    undo = cryptoflow("restore", "-t", "silver.fear_greed", "--snapshot", str(c), "--yes")
    assert undo.returncode == 0, undo.stderr
    assert read(FEAR_GREED_SQL) == states[c]["fear_greed"]
    assert snapshot_rows()[-1]["snapshot_id"] == c + 2
    # the whole lake back to A, in one snapshot: the ledger row written after A goes too
    everything = cryptoflow("restore", "--all", "--snapshot", str(a), "--yes")
    assert everything.returncode == 0, everything.stderr
    assert read_tables() == states[a]
    last = snapshot_rows()[-1]
    assert last["snapshot_id"] == c + 3
    assert set(json.loads(last["commit_extra_info"])["tables"]) == {
        "silver.fear_greed", "silver.trades", "ops.ingested_files"}  # only the tables that changed since A


def test_dry_run_shows_the_counts_and_changes_nothing(history):
    states, _ = history
    a, c = sorted(states)[1], sorted(states)[-1]
    before = snapshot_rows()
    result = cryptoflow("restore", "--all", "--snapshot", str(a), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[0].strip(): [p.strip() for p in line.split("│")[1:]] for line in result.stdout.splitlines()
             if "│" in line}
    assert lines["silver.trades"] == ["60", "40", "restore"]
    assert lines["silver.fear_greed"] == ["2", "3", "restore"]
    assert lines["silver.candles_1m"] == ["0", "0", "none: as at the snapshot"]
    assert snapshot_rows() == before
    assert read(TRADES_SQL) == states[c]["trades"]


def test_bad_input_is_a_clear_error_and_changes_nothing(history, settings):
    states, times = history
    s0, a, b, c = sorted(states)
    with lake.session(settings) as con:  # snapshot B expires (as maintenance would): it can no longer be named
        lake.write(con, lambda w: w.execute("CALL ducklake_expire_snapshots('lake', versions => [?])", [b]))
    before = snapshot_rows()
    cases = {
        ("restore", "--table", "silver.trades; DROP TABLE silver.fear_greed", "--snapshot", str(a), "--yes"):
            "not a lake table",
        ("restore", "--table", "main.secrets", "--snapshot", str(a), "--yes"): "not a lake table",
        ("restore", "--table", "silver.no_such", "--snapshot", str(a), "--yes"): "no table silver.no_such",
        ("restore", "--table", "silver.trades", "--snapshot", "999", "--yes"): "snapshot 999 does not exist",
        ("restore", "--table", "silver.trades", "--snapshot", str(b), "--yes"): f"snapshot {b} was expired",
        ("restore", "--table", "silver.trades", "--as-of", "1970-01-01", "--yes"): "before the lake's first snapshot",
        ("restore", "--table", "silver.trades", "--as-of", "9999-12-31T23:59:59", "--yes"): "in the future",
        ("restore", "--table", "silver.trades", "--as-of", "last tuesday", "--yes"): "not an ISO 8601 time",
        ("restore", "--table", "silver.trades", "--snapshot", str(a)): "pass --yes",  # stdin is not a terminal
        ("restore", "--table", "silver.trades", "--snapshot", "1; DROP TABLE x", "--yes"): "invalid int value",
        ("restore", "--snapshot", str(a), "--yes"): "one of the arguments --table/-t --all is required",
        ("query", "SELECT 1", "--snapshot", "999"): "snapshot 999 does not exist",
        ("query", "SELECT 1", "--snapshot", str(b)): f"snapshot {b} was expired",
        ("query", "SELECT 1", "--as-of", "0001-01-01"): "before the lake's first snapshot",
        # the state between B's and C's times was B's, which is gone: refused rather than answered with A's
        ("query", "SELECT 1", "--as-of", (times[b] + (times[c] - times[b]) / 2).isoformat()): "expired since",
        ("snapshots", "--table", "x; DROP TABLE y"): "not a lake table",
    }
    for args, message in cases.items():
        result = cryptoflow(*args)
        assert result.returncode == 2, (args, result.returncode, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
    assert snapshot_rows() == before
    assert read_tables() == states[c]
    # a kept snapshot still works after the expiry
    assert read(TRADES_SQL, "--snapshot", str(a)) == states[a]["trades"]


def test_a_snapshot_session_is_never_the_live_lake(history, settings):
    states, _ = history
    a = sorted(states)[1]
    with pytest.raises(ValueError, match="read-only"):
        lake.connect(settings, snapshot=a)
    with pytest.raises(ValueError, match="snapshot id"):
        lake.connect(settings, read_only=True, snapshot="1; DROP TABLE x")  # type: ignore[arg-type]
    live, old = lake.connect(settings, read_only=True), lake.connect(settings, read_only=True, snapshot=a)
    writer = lake.connect(settings)
    try:
        count = "SELECT count(*) FROM silver.trades"
        assert (live.execute(count).fetchone()[0], old.execute(count).fetchone()[0]) == (60, 40)
        lake.write(writer, lambda w: lake.insert(w, "silver.trades", trades(range(100, 105), 1.0)))
        assert (live.execute(count).fetchone()[0], old.execute(count).fetchone()[0]) == (65, 40)
    finally:
        for con in (live, old, writer):
            con.close()


def test_restore_while_another_process_writes_loses_none_of_its_commits(history):
    states, _ = history
    a, c = sorted(states)[1], sorted(states)[-1]
    batches, rows = 20, 25
    with lake_writer(batches, rows, "binance", "BTCUSDT") as writer:
        result = cryptoflow("restore", "--table", "silver.fear_greed", "--snapshot", str(a), "--yes")
        assert result.returncode == 0, result.stderr
        assert writer.stdout.readline().strip() == "done", writer.stderr.read()
        assert writer.wait(timeout=300) == 0
    assert read(FEAR_GREED_SQL) == states[a]["fear_greed"]
    counts = read("SELECT exchange, count(*) AS n FROM silver.trades GROUP BY 1 ORDER BY 1")
    assert counts == [{"exchange": "binance", "n": batches * rows}, {"exchange": "upbit", "n": len(states[c]["trades"])}]
