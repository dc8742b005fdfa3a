"""Outside values are checked against strict patterns before they reach SQL, URLs or paths.

Injection strings (SQL, path traversal, look-alike unicode, control characters) are tried at every entry point a market
code or file name comes in by: settings, REST clients (real HTTP: nothing may be sent), batch run config, alert rules,
the backfill CLI, the landing-path contract and the lake's table helpers. A source scan keeps SQL free of formatted
outside values.
"""

from __future__ import annotations

import ast
import os
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from cryptoflow_dagster import backfill, lake
from cryptoflow_dagster.alerting.rules import RuleError, parse_rules
from cryptoflow_dagster.batch.collect import select_markets
from cryptoflow_dagster.clients import BinanceClient, UpbitClient
from cryptoflow_core.settings import SettingsError, load_settings, validate_market
from cryptoflow_core import landing_files
from test_clients_rest import Scripted

REPO = Path(__file__).resolve().parents[1]
WHEN = datetime(2026, 7, 30, 7, 4, tzinfo=timezone.utc)

HOSTILE = [
    "KRW-BTC'; DROP TABLE silver.trades; --",
    "KRW-BTC' OR '1'='1",
    "../../etc/passwd",
    "KRW-../../etc",
    "KRW-BTC/../../x",
    "KRW-BTC\n",
    "KRW-BTC\x00",
    " KRW-BTC",
    "KRW-ВТС",  # Cyrillic look-alikes
    "ＫＲＷ-ＢＴＣ",  # fullwidth
    "KRW-BTC%27",
    "krw-btc",
    "KRW-",
    "KRW-" + "A" * 40,
    "",
]
HOSTILE_SYMBOLS = [
    "BTCUSDT'; DROP TABLE x; --",
    "../BTCUSDT",
    "BTCUSDT&symbol=ETHUSDT",
    "BTCUSDT#",
    "BTC USDT",
    "ＢＴＣＵＳＤＴ",
    "btcusdt",
    "BTCUSDT\r\n",
    "B",
]


@pytest.mark.parametrize("market", HOSTILE)
def test_hostile_upbit_codes_are_refused_by_settings_and_validation(market):
    with pytest.raises(SettingsError, match="invalid Upbit market"):
        validate_market("upbit", market)
    if market and market.strip() == market:  # settings trim spaces and drop empty items; the rest must be refused
        with pytest.raises(SettingsError, match="invalid Upbit market"):
            load_settings({"CRYPTOFLOW_UPBIT_MARKETS": f"{market},KRW-ETH"})


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS)
def test_hostile_binance_symbols_are_refused_by_settings_and_validation(symbol):
    with pytest.raises(SettingsError, match="invalid Binance symbol"):
        validate_market("binance", symbol)
    if symbol.strip() == symbol:
        with pytest.raises(SettingsError, match="invalid Binance symbol"):
            load_settings({"CRYPTOFLOW_BINANCE_SYMBOLS": f"ETHUSDT,{symbol}"})


def test_unknown_exchange_is_refused():
    with pytest.raises(SettingsError, match="unknown exchange"):
        validate_market("../upbit", "KRW-BTC")


def test_rest_clients_send_nothing_for_a_hostile_market():
    """Real HTTP on loopback: the server records every request, and none may arrive."""
    with Scripted({}) as server:
        upbit, binance = UpbitClient(server.url), BinanceClient(server.url)
        try:
            for market in HOSTILE:
                with pytest.raises(SettingsError):
                    upbit.candles(market, "1m", to=WHEN)
                with pytest.raises(SettingsError):
                    upbit.trade_ticks(market)
                with pytest.raises(SettingsError):
                    upbit.tickers(["KRW-BTC", market])
            for symbol in HOSTILE_SYMBOLS:
                with pytest.raises(SettingsError):
                    binance.klines(symbol, "1m")
                with pytest.raises(SettingsError):
                    binance.agg_trades(symbol)
                with pytest.raises(SettingsError):
                    binance.historical_trades(symbol, from_id=1)
        finally:
            upbit.close()
            binance.close()
    assert server.requests == []


def test_batch_run_config_and_alert_rules_refuse_hostile_markets(settings):
    for market in ["KRW-BTC'; DROP TABLE x", "../../etc", "BTCUSDT;--"]:
        with pytest.raises(SettingsError):
            select_markets(settings, ["KRW-BTC", market])
        with pytest.raises(RuleError, match="markets"):
            parse_rules({"markets": {f"upbit:{market}": {"price_move": {"pct": 1.0}}}})


def test_backfill_cli_refuses_hostile_markets_before_contacting_dagster(capsys):
    with Scripted({}) as server:
        for markets in ["KRW-BTC,KRW-BTC'; DROP TABLE silver.trades; --", "../../etc", "BTCUSDT,ＢＴＣＵＳＤＴ"]:
            code = backfill.main(["--start", "2025-09-01", "--end", "2025-09-02", "--markets", markets,
                                  "--url", server.url, "--no-follow"])
            assert code == 2
            assert "invalid" in capsys.readouterr().err
    assert server.requests == []


# --- landing files: the path contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("exchange,channel", [("../../etc", "trade"), ("upbit", "../x"), ("UPBIT", "trade"),
                                              ("upbit/..", "trade"), ("kraken", "trade")])
def test_landing_path_refuses_unknown_streams(tmp_path, exchange, channel):
    with pytest.raises(ValueError):
        landing_files.landing_path(tmp_path, exchange, channel, WHEN, "0123456789abcdef", 1)


@pytest.mark.parametrize("session", ["../../etc", "ABCDEF01", "0123", "0123456789abcdef/..", "0123456789abcdeg"])
def test_landing_file_names_refuse_hostile_sessions(tmp_path, session):
    with pytest.raises(ValueError):
        landing_files.landing_path(tmp_path, "upbit", "trade", WHEN, session, 1)


def test_landing_parse_and_listing_ignore_files_outside_the_contract(tmp_path):
    root = tmp_path / "landing"
    good = landing_files.landing_path(root, "upbit", "trade", WHEN, "0123456789abcdef", 7)
    landing_files.write_atomically(good, lambda p: p.write_bytes(b"PAR1"))
    day = good.parent
    hostile_names = [
        "x'; DROP TABLE ops.ingested_files; --.parquet",
        "20260730T070400000000Z-0123456789abcdef-00000001.parquet.evil",
        "20260730T070400000000Z-0123456789abcdef-1.parquet",
        "20260730T070400000000Z-0123456789ABCDEF-00000001.parquet",
        ".20260730T070400000000Z-0123456789abcdef-00000002.parquet.tmp",
        "20260730T070400000000Z-0123456789abcdef-0000000１.parquet",  # fullwidth digit
        "20260730T070400000000Z-0123456789abcdef-00000003.parquet\n",
    ]
    for name in hostile_names:
        (day / name).write_bytes(b"PAR1")
    (root / "upbit" / "trade" / "date=2026-13-45").mkdir()
    (root / "upbit" / "trade" / "date=2026-13-45" / good.name).write_bytes(b"PAR1")
    (root / "upbit" / "evil").mkdir()
    (root / "upbit" / "evil" / good.name).write_bytes(b"PAR1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / good.name).write_bytes(b"PAR1")
    os.symlink(outside, root / "upbit" / "trade" / "date=2026-07-31-link")

    assert [f.path for f in landing_files.list_files(root)] == [good]
    for path in [day / n for n in hostile_names] + [
        root / "upbit" / "trade" / "date=2026-13-45" / good.name,
        day / ".." / ".." / ".." / ".." / "outside" / good.name,
        outside / good.name,
        root / "upbit" / "trade" / good.name,
    ]:
        assert landing_files.parse(path, root) is None, path
    assert landing_files.parse(good, root).relative == f"upbit/trade/date=2026-07-30/{good.name}"


# --- the lake's helpers and the source: no formatted outside values in SQL -------------------------------------------


def test_lake_table_helpers_refuse_hostile_table_and_column_names(settings):
    frame = pl.DataFrame({"file": ["a"]})
    with lake.session(settings) as con:
        lake.ensure_schema(con)
        for table in ["gold.alerts; DROP TABLE silver.trades", "silver.trades --", "ops.gaps WHERE 1=1", "main.x"]:
            with pytest.raises(ValueError, match="lake table"):
                lake.replace_rows(con, table, "TRUE", [], frame)
        hostile = pl.DataFrame({'file") SELECT 1; DROP TABLE ops.gaps; --': ["a"]})
        with pytest.raises(Exception) as raised:
            lake.write(con, lambda c: lake.insert(c, "ops.ingested_files", hostile))
        assert "DROP" not in type(raised.value).__name__
        assert con.execute("SELECT count(*) FROM ops.gaps").fetchone() == (0,)  # still there


# Every expression formatted into SQL text in the platform's code, reviewed: constants, SQL fragments built from
# constants, identifiers from the contract, or numbers coerced with int()/float(). Anything new here needs a review:
# outside values go in as parameters (?, $name), never into the text.
REVIEWED_SQL_INTERPOLATIONS = {
    "cryptoflow_dagster/lake/extensions.py": {"name", "literal(str(packaged_extension(name)))"},
    # alias: checked to be an ASCII identifier other than the live catalog's name (snapshot_attached)
    "cryptoflow_dagster/lake/databases.py": {"CATALOG", "'CREATE OR REPLACE SECRET cryptoflow_s3 (' + ', '.join(options) + ')'",
                                             "alias"},
    "cryptoflow_dagster/lake/schema.py": {"CATALOG", "table", "columns", "schema"},
    "cryptoflow_dagster/lake/tables.py": {"CATALOG", "table", "where_sql", "columns"},
    "cryptoflow_dagster/slo.py": {"column", "relation", "catalog", "_TRADES.format(catalog=catalog)"},
    "cryptoflow_dagster/streaming/intraday_gold.py": {"RANGES", "_OHLCV", "_STATS", "_KIMCHI"},
    "cryptoflow_dagster/streaming/ingest.py": {"_MINE", "_STAGED"},
    # new: built from the callers' constant SQL; count_by is checked to be an identifier
    "cryptoflow_dagster/silver_trades.py": {"COLUMNS", "new", "count_by", "candidates"},
    # restore: tables pass is_table_name and are listed by the catalog; columns are quoted identifiers read from it;
    # database is the live catalog or the snapshot's constant alias
    "cryptoflow_dagster/cli/restore.py": {"SNAPSHOT_ALIAS", "_lit(lake.CATALOG)", "columns", "database", "lake.CATALOG",
                                          "step.table", "table"},
    "cryptoflow_dagster/cli/snapshots.py": {"lake.CATALOG", "meta"},
    # lake upkeep: DuckLake's own metadata names (inlined table names checked against their pattern), ints, constants
    "cryptoflow_dagster/maintenance/lake_upkeep.py": {"INGESTED", "METADATA", "int(table_id)", "int(target_bytes)",
                                                      "lake.CATALOG", "name"},
    "cryptoflow_dagster/dead_letters.py": {"COLUMNS", "rows", "known", "'DISTINCT ' if once_per_batch else ''"},
    "cryptoflow_dagster/defs/streaming/tickers.py": {"_MINE"},
    "cryptoflow_dagster/defs/silver/candles.py": {"table"},
    "cryptoflow_dagster/defs/lake_tables.py": {"_checked(table)"},
    "cryptoflow_dagster/alerting/market.py": {"_HIST", "_PARAMS", "window", "_NEW", "bucket", "_BARS", "window - 1",
                                              "pctl / 100.0", "trailing + 1", "_RANGES", "_RAW", "_COMMON", "_KNOWN",
                                              "bucket_s"},  # bucket_s: an int, math.gcd of rule integers
    "cryptoflow_dagster/alerting/digest.py": {"vol_day", "vol_roll", "' '.join(joins)"},
    "cryptoflow_dagster/alerting/outbox.py": {"COLUMNS"},
    "cryptoflow_dagster/batch/quality.py": {"sql", "table"},
    # the API: table and column names come from its own constant resource/table lists, never from a request (values
    # are ? parameters; tests/test_api.py sends injection attempts in every string parameter)
    "cryptoflow_serving/queries.py": {"resource.table", "resource.time", "column", "direction", "key", "marks"},
    "cryptoflow_serving/live.py": {"queries.changed_range_sql(by_table[table])"},
    "cryptoflow_serving/health.py": {"table", "column"},
}


def formatted_sql(path: Path) -> set[str]:
    """Expressions formatted into the first argument of ``.execute``/``.sql``/``.query`` calls in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                and node.func.attr in ("execute", "executemany", "sql", "query")):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.JoinedStr):
            found |= {ast.unparse(v.value) for v in ast.walk(arg) if isinstance(v, ast.FormattedValue)}
        elif isinstance(arg, ast.BinOp) or (isinstance(arg, ast.Call) and getattr(arg.func, "attr", "") == "format"):
            found.add(ast.unparse(arg))
    return found


def test_sql_text_formats_only_reviewed_expressions():
    unreviewed = {}
    for package in ("cryptoflow_dagster", "cryptoflow_serving", "streaming_sensor", "exchange_sim"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            extra = formatted_sql(path) - REVIEWED_SQL_INTERPOLATIONS.get(rel, set())
            if extra:
                unreviewed[rel] = sorted(extra)
    assert not unreviewed, f"SQL text built from unreviewed expressions (use parameters): {unreviewed}"


def test_the_source_scan_finds_a_formatted_market(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(con, market):\n    con.execute(f"SELECT * FROM silver.trades WHERE market = \'{market}\'")\n')
    assert formatted_sql(sample) == {"market"}
