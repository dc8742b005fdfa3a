"""The benchmark harness runs end to end at a tiny size and writes valid results (figures are not asserted: speed
belongs in BENCHMARKS.md, not in tests)."""

from __future__ import annotations

import json

from benchmarks import run
from benchmarks.common import Figure, summarize
from benchmarks.report import BEGIN, END, update_markdown


def test_summary_and_verdicts():
    assert summarize([3.0, 1.0, 2.0, None]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3,
                                                "values": [3.0, 1.0, 2.0]}
    assert Figure("rate", "msg/s", [60_000.0, 40_000.0, 55_000.0], (">=", 50_000)).as_json()["verdict"] == "pass"
    assert Figure("p95", "s", [12.0, 11.0, 9.0], ("<=", 10.0)).as_json()["verdict"] == "miss"
    assert Figure("info", "s", [1.0]).as_json()["verdict"] is None


def test_tiny_backfill_writes_json_and_the_markdown_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYPTOFLOW_BENCH_BACKFILL_DAYS", "1")
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text(f"# Benchmarks\n\nhand-written analysis\n\n{BEGIN}\nold tables\n{END}\n\n## Notes\nkept\n")
    assert run.main(["--only", "backfill", "--runs", "2", "--out", str(tmp_path / "results"), "--no-markdown"]) == 0

    data = json.loads((tmp_path / "results" / "backfill.json").read_text())
    assert data["benchmark"] == "backfill" and data["machine"]["cores"] >= 1 and data["machine"]["load_avg"]
    figures = {f["name"]: f for f in data["figures"]}
    share = figures["achieved requests/s / limit"]
    assert share["runs"] == 2 and share["min"] <= share["median"] <= share["max"] and share["verdict"] in ("pass", "miss")
    assert all(r["requests"] >= 4 * 8 and r["candles"] > 0 for r in data["details"]["rounds"])  # 4 markets x 8 pages

    update_markdown(tmp_path / "results", markdown)
    text = markdown.read_text()
    assert "hand-written analysis" in text and "## Notes\nkept" in text and "old tables" not in text
    assert "### backfill" in text and "| achieved requests/s / limit |" in text


def test_tiny_batch_checks_the_pandas_baseline_against_the_platform(tmp_path, monkeypatch):
    # PySpark is left out (its session start alone is 15+ s); the first build's, pandas' and bare DuckDB's outputs (bars,
    # stats, silver rows) are compared with the platform's rebuild inside run
    monkeypatch.setenv("CRYPTOFLOW_BENCH_BATCH_TRADES", "3000")
    monkeypatch.setenv("CRYPTOFLOW_BENCH_BATCH_ENGINES", "duckdb,duckdb_first,bare,pandas")
    monkeypatch.setenv("CRYPTOFLOW_BENCH_BATCH_WORK", str(tmp_path / "work"))
    assert run.main(["--only", "batch", "--runs", "1", "--out", str(tmp_path / "results"), "--no-markdown"]) == 0

    data = json.loads((tmp_path / "results" / "batch_0.003m.json").read_text())
    assert data["details"]["outputs_equal"] == {"duckdb_first": True, "bare": True, "pandas": True}
    duckdb_round = data["details"]["rounds"]["duckdb"][0]
    assert duckdb_round["silver_rows"] == data["details"]["setup"]["trades"] > 0 and duckdb_round["job_cpu_s"] > 0
    # the first build starts from empty silver and gold, and still writes every trade
    assert data["details"]["rounds"]["duckdb_first"][0]["silver_rows"] == duckdb_round["silver_rows"]
    assert (tmp_path / "work" / "setup-3000.json").exists()  # kept for the next run of that size
