from __future__ import annotations

import os
import shutil
import subprocess
import sys

import polars as pl
import pytest

from cryptoflow_dagster import lake
from cryptoflow_dagster.lake.schema import TABLES
from cryptoflow_core.settings import SettingsError, load_settings


def test_fresh_extension_folder_is_filled_from_packages(settings):
    assert not settings.extension_dir.exists()
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        loaded = {r[0] for r in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"ducklake", "sqlite_scanner"} <= loaded
    assert list(settings.extension_dir.rglob("ducklake.duckdb_extension"))


def test_schema_has_every_contract_table(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.ensure_schema(con)  # idempotent
        tables = {
            f"{s}.{t}"
            for s, t in con.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake'"
            ).fetchall()
        }
    assert set(TABLES) <= tables


def test_the_lake_writes_parquet_v2_files_new_catalog_or_old(settings):
    """ensure_schema sets the lake's Parquet format (v2: DELTA encodings) on a new catalog and on one made before the
    option existed; the data files written after it use v2 encodings, and files written before read as they did."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        lake.write(con, lambda c: c.execute("CALL lake.set_option('parquet_version', '1')"))  # a catalog from before
        rows = "SELECT DATE '{}' + i::INT, i, '{}', now() FROM range(5000) t(i)"
        con.execute("INSERT INTO silver.fear_greed " + rows.format("2020-01-01", "Fear"))
        lake.ensure_schema(con)
        assert con.execute("SELECT value FROM ducklake_options('lake') WHERE option_name = 'parquet_version'"
                           ).fetchone() == ("V2",)
        con.execute("INSERT INTO silver.fear_greed " + rows.format("2040-01-01", "Greed"))
        files = [r[0] for r in con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'fear_greed', schema => 'silver') ORDER BY data_file"
        ).fetchall()]
        day_encodings = "SELECT encodings FROM parquet_metadata(?) WHERE path_in_schema = 'day'"
        encodings = [{r[0] for r in con.execute(day_encodings, [f]).fetchall()} for f in files]
        assert sorted(encodings, key=str) == [{"DELTA_BINARY_PACKED"}, {"PLAIN"}]  # the old file kept, the new in v2
        assert con.execute("SELECT count(*), sum(value) FROM silver.fear_greed").fetchone() == (10000, 2 * 12497500)


def test_replace_rows_is_idempotent(settings):
    frame = pl.DataFrame({"day": ["2025-01-01", "2025-01-02"], "value": [10, 20], "classification": ["Fear", "Fear"]})
    frame = frame.with_columns(pl.col("day").str.to_date())
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for _ in range(3):
            lake.replace_rows(con, "silver.fear_greed", "day BETWEEN ? AND ?", ["2025-01-01", "2025-01-02"], frame)
        assert con.execute("SELECT count(*), sum(value) FROM silver.fear_greed").fetchone() == (2, 30)


def test_failed_unit_of_work_leaves_nothing(settings):
    frame = pl.DataFrame({"day": ["2025-01-01"], "value": [10], "classification": ["Fear"]})
    frame = frame.with_columns(pl.col("day").str.to_date())
    with lake.session(settings) as con:
        lake.ensure_schema(con)

        def half_then_fail(c):
            lake.insert(c, "silver.fear_greed", frame)
            raise ValueError("boom after the insert")

        with pytest.raises(ValueError, match="boom"):
            lake.write(con, half_then_fail)
        assert con.execute("SELECT count(*) FROM silver.fear_greed").fetchone() == (0,)


def test_read_only_session_refuses_writes(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    with lake.session(settings, read_only=True) as ro:
        assert ro.execute("SELECT count(*) FROM silver.trades").fetchone() == (0,)
        with pytest.raises(Exception, match="read-only"):
            ro.execute("INSERT INTO silver.fear_greed VALUES ('2025-01-01', 1, 'Fear', NULL)")


def _memory_limit(con) -> str:
    return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_memory_limit_setting_caps_every_connection(settings, monkeypatch):
    with lake.session(settings) as con:
        default = _memory_limit(con)
    monkeypatch.setenv("CRYPTOFLOW_DUCKDB_MEMORY_LIMIT", "1.5GiB")
    with lake.session() as con:  # settings from the environment, as a run or the CLI reads them
        assert _memory_limit(con) == "1.5 GiB"
    with lake.session(read_only=True) as ro:
        assert _memory_limit(ro) == "1.5 GiB"
    assert default != "1.5 GiB"  # unset: DuckDB's own default, not the cap


def test_a_long_lived_reader_keeps_no_copy_of_the_files_it_reads(settings):
    """A process that keeps its lake database open and reads each new stream file (the API's live feed, the sensors)
    must not keep the files' blocks: DuckDB's external file cache would hold them up to memory_limit (80 % of RAM by
    default), +400 MiB an hour at 250 markets. Local files are left to the OS page cache."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for i in range(20):
            lake.write(con, lambda c, i=i: c.execute(
                "INSERT INTO silver.trades SELECT 'upbit', 'KRW-BTC', $i * 5000 + range, TIMESTAMPTZ '2026-07-30 07:00:00+00' "
                "+ to_milliseconds($i * 5000 + range), 100 + range % 7, 0.5, 50, 'buy', now(), now(), 'ws', DATE '2026-07-30' "
                "FROM range(5000)", {"i": i}))
    with lake.session(settings, read_only=True) as ro:
        assert ro.execute("SELECT sum(price) FROM silver.trades").fetchone()[0] > 0  # every file read
        cached = ro.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                            "WHERE tag = 'EXTERNAL_FILE_CACHE'").fetchone()[0]
        assert cached == 0


@pytest.mark.parametrize("value", ["3", "3 G", "-1GB", "3gb", "80%", "3GB; SET threads = 1", "1.GB"])
def test_memory_limit_setting_refuses_a_bad_value(cryptoflow_home, monkeypatch, value):
    monkeypatch.setenv("CRYPTOFLOW_DUCKDB_MEMORY_LIMIT", value)
    with pytest.raises(SettingsError, match="CRYPTOFLOW_DUCKDB_MEMORY_LIMIT.*e.g. 3GB"):
        load_settings()
    with pytest.raises(SettingsError, match="CRYPTOFLOW_DUCKDB_MEMORY_LIMIT"):
        lake.connect()


def test_missing_extension_package_names_it(monkeypatch):
    # Simulates an environment where the package was never installed: the error must name what to install.
    real_import = lake.extensions.importlib.import_module

    def fake(name, *a, **k):
        if name == "duckdb_extension_ducklake":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(lake.extensions.importlib, "import_module", fake)
    with pytest.raises(lake.LakeError, match="duckdb-extension-ducklake==1.5.5"):
        lake.packaged_extension("ducklake")


def _write_in_another_process(home, sql: str) -> None:
    code = ("from cryptoflow_dagster import lake\n"
            "with lake.session() as con:\n"
            f"    lake.write(con, lambda c: c.execute({sql!r}))\n")
    env = {**os.environ, "CRYPTOFLOW_HOME": str(home)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_connections_share_one_database_and_see_other_processes_commits(settings):
    """Connections of one process are cursors of one database (the extensions' signature checks are paid once), yet
    each sees what another process committed since, a table it created included, and keeps its own session."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        con.execute("SET TimeZone = 'Asia/Seoul'")  # a session setting of this connection only
        before = con.execute("SELECT count(*) FROM silver.fear_greed").fetchone()
        _write_in_another_process(settings.home, "INSERT INTO silver.fear_greed VALUES ('2025-01-01', 7, 'Fear', NULL)")
        _write_in_another_process(settings.home, "CREATE TABLE gold.made_elsewhere AS SELECT 42 AS answer")
        # the connection opened before the commits sees them in its next transaction
        assert con.execute("SELECT count(*) FROM silver.fear_greed").fetchone() == (before[0] + 1,)
        with lake.session(settings) as other:
            assert other.execute("SELECT answer FROM gold.made_elsewhere").fetchall() == [(42,)]
            assert other.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
            # one database, two cursors: a table in its in-memory catalog is seen by both
            con.execute("CREATE TABLE memory.main.shared_marker AS SELECT 1 AS one")
            assert other.execute("SELECT one FROM memory.main.shared_marker").fetchall() == [(1,)]
        assert con.execute("SELECT value FROM silver.fear_greed").fetchall() == [(7,)]  # closing one left the other


def test_a_replaced_lake_is_attached_afresh(settings):
    """A lake whose catalog file was removed and made again (a reset) is not read through the old attachment."""
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        con.execute("INSERT INTO silver.fear_greed VALUES ('2025-01-01', 7, 'Fear', NULL)")
    shutil.rmtree(settings.lake_dir)
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        assert con.execute("SELECT count(*) FROM silver.fear_greed").fetchone() == (0,)
        con.execute("INSERT INTO silver.fear_greed VALUES ('2025-01-02', 8, 'Fear', NULL)")
    _write_in_another_process(settings.home, "INSERT INTO silver.fear_greed VALUES ('2025-01-03', 9, 'Fear', NULL)")
    with lake.session(settings, read_only=True) as con:
        assert con.execute("SELECT value FROM silver.fear_greed ORDER BY day").fetchall() == [(8,), (9,)]


def test_idle_databases_of_other_lakes_are_closed_but_one_in_use_is_not(tmp_path):
    """A process opening many lakes (the test suite does) keeps only a few idle databases; a database a connection
    still holds stays open, whatever else is opened."""
    homes = [load_settings({"CRYPTOFLOW_HOME": str(tmp_path / f"home{i}")}) for i in range(6)]
    held = lake.connect(homes[0])
    lake.ensure_schema(held)
    for settings in homes[1:] * 2:
        con = lake.connect(settings)
        lake.ensure_schema(con)
        con.close()
        del con  # no longer held: its database is idle
    assert held.execute("SELECT count(*) FROM silver.trades").fetchone() == (0,)
    open_lakes = [key[0] for key in lake.databases._DATABASES if key[0] in {s.catalog_uri for s in homes}]
    # the held lake, the last one opened and at most the few idle ones kept
    assert homes[0].catalog_uri in open_lakes and homes[-1].catalog_uri in open_lakes
    assert len(open_lakes) <= 2 + lake.databases._IDLE_DATABASES_KEPT
    held.close()
