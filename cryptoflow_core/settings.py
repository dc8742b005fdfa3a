"""Every setting of the platform, read from ``CRYPTOFLOW_*`` environment variables.

One frozen dataclass, built by :func:`load_settings`, is the single place a setting is named, defaulted and
validated; ``.env.example`` and the README's table list the same variables. The module imports nothing heavy
(no Dagster), so the sidecar, the simulator and the CLI can use it too.

Secrets (``SLACK_BOT_TOKEN``) are deliberately absent: Dagster code reads them through ``dg.EnvVar`` only.

Every process's entry point first calls :func:`load_env_files`: variables from ``.env`` in the working directory, then
from ``$CRYPTOFLOW_HOME/.env`` (where ``cryptoflow demo`` writes the settings it chose), fill in what the process
environment does not set. The process environment always wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path

from dotenv import dotenv_values

from cryptoflow_core.heartbeat import heartbeat_path

# Market codes reach SQL parameters, URLs and landing paths: anything outside these patterns is refused early.
UPBIT_MARKET_RE = re.compile(r"^(KRW|BTC|USDT)-[A-Z0-9]{1,15}$")
BINANCE_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SHARD_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}", re.ASCII)
# A DuckDB memory size as an operator writes it ("3GB", "512 MiB"); it reaches a SET statement, so nothing else.
MEMORY_LIMIT_RE = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.ASCII)

DEFAULT_UPBIT_MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-USDT")
DEFAULT_BINANCE_SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")


class SettingsError(ValueError):
    """A setting has a value the platform cannot use; the message names the variable."""


def validate_upbit_market(market: str) -> str:
    if not UPBIT_MARKET_RE.fullmatch(market):
        raise SettingsError(f"invalid Upbit market code {market!r}: expected e.g. KRW-BTC")
    return market


def validate_binance_symbol(symbol: str) -> str:
    if not BINANCE_SYMBOL_RE.fullmatch(symbol):
        raise SettingsError(f"invalid Binance symbol {symbol!r}: expected e.g. BTCUSDT")
    return symbol


def validate_market(exchange: str, market: str) -> str:
    """Validate a market code for its exchange (the one check every path, URL and query builder calls)."""
    if exchange == "upbit":
        return validate_upbit_market(market)
    if exchange == "binance":
        return validate_binance_symbol(market)
    raise SettingsError(f"unknown exchange {exchange!r}: expected upbit or binance")


# A market list given as a rule, resolved from the exchange's REST (cryptoflow_core/market_list.py): Upbit "ALL"
# (every KRW- market), Binance "ALL" or "TOP<n>" (trading USDT symbols by 24 h quote volume).
_SELECTOR_RE = {"upbit": re.compile(r"ALL", re.ASCII), "binance": re.compile(r"ALL|TOP[1-9][0-9]{0,3}", re.ASCII)}


def market_selector(exchange: str, values: tuple[str, ...]) -> str | None:
    """The selector a market setting holds (``("TOP50",)`` -> ``"TOP50"``), or None for a plain list of markets."""
    if len(values) == 1 and _SELECTOR_RE[exchange].fullmatch(values[0].upper()):
        return values[0].upper()
    return None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Setting:
    """Documentation of one variable: used by ``cryptoflow doctor`` and to check the README table."""

    env: str
    default: str
    help: str


def _s(env: str, default: str, help: str, *, secret: bool = False) -> object:
    # A secret's value stays out of the dataclass repr (and so out of any log line or error that prints settings).
    return field(default=None, repr=not secret, metadata={"setting": Setting(env, default, help)})


@dataclass(frozen=True)
class Settings:
    home: Path = _s("CRYPTOFLOW_HOME", "./data", "Data directory: lake, landing files, Dagster home, sidecar state.")
    lake_catalog: str = _s(
        "CRYPTOFLOW_LAKE_CATALOG",
        "",
        "DuckLake catalog. Empty: SQLite file <home>/lake/catalog.sqlite. "
        "Or 'postgres:dbname=lake host=127.0.0.1 user=...'.",
    )
    lake_data_path: str = _s(
        "CRYPTOFLOW_LAKE_DATA_PATH", "", "Where DuckLake writes Parquet. Empty: <home>/lake/data/. Or s3://bucket/prefix/."
    )
    s3_endpoint: str = _s(
        "CRYPTOFLOW_S3_ENDPOINT",
        "",
        "S3-compatible endpoint for an s3:// data path, e.g. http://127.0.0.1:9000 (keys from AWS_* variables).",
    )
    duckdb_memory_limit: str = _s(
        "CRYPTOFLOW_DUCKDB_MEMORY_LIMIT",
        "",
        "DuckDB memory_limit of every lake connection the platform opens (streaming and batch runs, CLI), e.g. 3GB or "
        "512MiB; beyond it DuckDB spills to disk. dbt's gold build opens its own connection and is not capped. "
        "Empty: DuckDB's default (80% of RAM).",
    )
    dagster_pg_url: str = _s(
        "CRYPTOFLOW_DAGSTER_PG_URL",
        "",
        "Dagster instance storage on PostgreSQL, e.g. postgresql+psycopg2://dagster@127.0.0.1:5432/dagster. "
        "Empty: SQLite under <home>/dagster_home. dagster.yaml names the variable, never its value.",
    )
    landing_dir: Path = _s("CRYPTOFLOW_LANDING_DIR", "", "Micro-batch landing folder. Empty: <home>/landing.")
    upbit_rest_url: str = _s("CRYPTOFLOW_UPBIT_REST_URL", "https://api.upbit.com", "Upbit REST base URL (or the simulator's).")
    upbit_ws_url: str = _s(
        "CRYPTOFLOW_UPBIT_WS_URL", "wss://api.upbit.com/websocket/v1", "Upbit WebSocket URL (or the simulator's)."
    )
    binance_rest_url: str = _s(
        "CRYPTOFLOW_BINANCE_REST_URL", "https://api.binance.com", "Binance REST base URL (or the simulator's)."
    )
    binance_ws_url: str = _s(
        "CRYPTOFLOW_BINANCE_WS_URL", "wss://stream.binance.com:9443", "Binance WebSocket base URL (or the simulator's)."
    )
    fear_greed_url: str = _s(
        "CRYPTOFLOW_FEAR_GREED_URL", "https://api.alternative.me", "alternative.me base URL (or the simulator's)."
    )
    upbit_markets: tuple[str, ...] = _s(
        "CRYPTOFLOW_UPBIT_MARKETS",
        ",".join(DEFAULT_UPBIT_MARKETS),
        "Upbit markets, comma-separated; or ALL: every KRW- market /v1/market/all lists, resolved when the sidecar "
        "starts (docs/width.md).",
    )
    binance_symbols: tuple[str, ...] = _s(
        "CRYPTOFLOW_BINANCE_SYMBOLS",
        ",".join(DEFAULT_BINANCE_SYMBOLS),
        "Binance symbols, comma-separated; or TOP<n> (e.g. TOP50): the n trading USDT symbols with the highest 24 h "
        "quote volume, or ALL: every trading USDT symbol; resolved when the sidecar starts (docs/width.md).",
    )
    start_date: date = _s("CRYPTOFLOW_START_DATE", "2025-09-01", "First day of the daily partitions (UTC).")
    backfill_days_per_run: int = _s(
        "CRYPTOFLOW_BACKFILL_DAYS_PER_RUN",
        "31",
        "Backfills: daily partitions per run (backfill policy). Fewer days per run means more runs at once, up to "
        "the instance's run limits.",
    )
    forecast_min_train_days: int = _s(
        "CRYPTOFLOW_FORECAST_MIN_TRAIN_DAYS",
        "365",
        "Volatility forecasts: days of realized variance a market needs before its first HAR/GARCH forecast (expanding "
        "window after that; ADR 0022). At least 23 (HAR's 22-day monthly term plus one).",
    )
    sidecar_shard: str = _s(
        "CRYPTOFLOW_SIDECAR_SHARD",
        "",
        "Sidecar shard name (a-z, 0-9, -) when several sidecars on disjoint markets share one landing folder: each "
        "keeps its own heartbeat, _heartbeat.<shard>.json. Empty: one sidecar, _heartbeat.json.",
    )
    flush_interval_s: float = _s("CRYPTOFLOW_FLUSH_INTERVAL_S", "1.0", "Sidecar: seconds between micro-batch files.")
    flush_max_messages: int = _s("CRYPTOFLOW_FLUSH_MAX_MESSAGES", "5000", "Sidecar: messages that force a flush.")
    stream_markets_per_connection: int = _s(
        "CRYPTOFLOW_STREAM_MARKETS_PER_CONNECTION",
        "100",
        "Sidecar: at most this many markets per WebSocket connection; more markets open more connections, each with "
        "its own reconnects and gap windows (Binance allows 1,024 streams per connection).",
    )
    stream_run_max_s: float = _s(
        "CRYPTOFLOW_STREAM_RUN_MAX_S",
        "300",
        "Streaming run: seconds one run keeps ingesting files as they land before it ends and the sensor starts the "
        "next (a redeploy's code is live after at most this long). 0: one pass over the pending files.",
    )
    stream_run_idle_s: float = _s(
        "CRYPTOFLOW_STREAM_RUN_IDLE_S", "30", "Streaming run: ends early after this many seconds without a new file."
    )
    stream_poll_s: float = _s("CRYPTOFLOW_STREAM_POLL_S", "0.25", "Streaming run: seconds between looks for new files.")
    stream_gap_repair_s: float = _s(
        "CRYPTOFLOW_STREAM_GAP_REPAIR_S", "60", "Streaming run: seconds between its gap detection and repair passes."
    )
    gap_repair_budget_s: float = _s(
        "CRYPTOFLOW_GAP_REPAIR_BUDGET_S",
        "10",
        "Gap repair: seconds one pass may spend fetching over REST; gaps left over stay open for the next pass, the "
        "oldest first (after a reconnect on hundreds of markets, a pass must not hold up ingestion for minutes).",
    )
    stream_handover_s: float = _s(
        "CRYPTOFLOW_STREAM_HANDOVER_S",
        "45",
        "Streaming run: the next run is requested this many seconds before the current one reaches "
        "CRYPTOFLOW_STREAM_RUN_MAX_S; the current one ends only once the next is ready to take over (no freshness "
        "spike at the hand-over, docs/decisions/0019). 0: no overlap (the next run starts after the last ended).",
    )
    landing_retention_days: int = _s(
        "CRYPTOFLOW_LANDING_RETENTION_DAYS",
        "7",
        "Landing files older than this many days are deleted once the lake holds them (ops.ingested_files); files not "
        "ingested are never deleted. 0: keep every file.",
    )
    alert_watch_s: float = _s(
        "CRYPTOFLOW_ALERT_WATCH_S",
        "45",
        "Market alert sensor: seconds one tick keeps watching the landing folder for new trade files (0: one look per "
        "tick; at most 45). Dagster's sensor daemon starts a tick at most every 5 s, at its next loop after the last "
        "one ended, so a watching tick sees a file within 0.2 s of landing, and only the hand-over between ticks (ended "
        "just before a loop) is blind.",
    )
    background_nice: int = _s(
        "CRYPTOFLOW_BACKGROUND_NICE",
        "5",
        "Niceness of work that can wait: batch runs (backfills, dbt builds, maintenance, forecasts, digests) and the "
        "API. The sidecar, the streaming run and the alert sensor keep the normal priority, so on a saturated machine "
        "they get the CPU first (docs/decisions/0024). 0: everything at the same priority.",
    )
    heartbeat_stale_s: float = _s(
        "CRYPTOFLOW_HEARTBEAT_STALE_S", "30", "A sidecar heartbeat older than this raises a sidecar-down alert."
    )
    slack_api_url: str = _s(
        "CRYPTOFLOW_SLACK_API_URL", "https://slack.com/api/", "Slack Web API base URL (the demo uses the simulator's sink)."
    )
    slack_channel: str = _s("CRYPTOFLOW_SLACK_CHANNEL", "#cryptoflow-alerts", "Slack channel for alerts and the digest.")
    ui_url: str = _s("CRYPTOFLOW_UI_URL", "http://127.0.0.1:3000", "Dagster UI base URL used in links.")
    ui_host: str = _s("CRYPTOFLOW_UI_HOST", "127.0.0.1", "Address the Dagster UI binds to.")
    ui_port: int = _s("CRYPTOFLOW_UI_PORT", "3000", "Port of the Dagster UI.")
    api_host: str = _s(
        "CRYPTOFLOW_API_HOST",
        "127.0.0.1",
        "Address `cryptoflow serve` (the market-data API) binds to. Anything but a loopback address requires "
        "CRYPTOFLOW_API_KEYS.",
    )
    api_port: int = _s("CRYPTOFLOW_API_PORT", "8000", "Port of the market-data API (`cryptoflow serve`).")
    api_keys: tuple[str, ...] = _s(
        "CRYPTOFLOW_API_KEYS",
        "",
        "Secret: API keys of the market-data API, comma-separated; clients send one as X-API-Key or Authorization: "
        "Bearer. Empty: no key asked (loopback only). Never logged or shown.",
        secret=True,
    )
    api_rate_limit: float = _s(
        "CRYPTOFLOW_API_RATE_LIMIT",
        "50",
        "Market-data API: requests per second per key (per client address without keys), bursts of one second's "
        "worth; over it a 429 with Retry-After. 0: no limit.",
    )
    sim_host: str = _s("CRYPTOFLOW_SIM_HOST", "127.0.0.1", "Address the exchange simulator binds to.")
    sim_port: int = _s("CRYPTOFLOW_SIM_PORT", "8765", "Port of the exchange simulator.")
    sim_seed: int = _s("CRYPTOFLOW_SIM_SEED", "42", "Simulator random seed (same seed, same trades).")
    sim_history_days: int = _s("CRYPTOFLOW_SIM_HISTORY_DAYS", "120", "Days of history the simulator serves.")
    sim_trade_rate: float = _s("CRYPTOFLOW_SIM_TRADE_RATE", "3", "Simulator live trades per second per market.")
    sim_total_trade_rate: float = _s(
        "CRYPTOFLOW_SIM_TOTAL_TRADE_RATE",
        "0",
        "Simulator: live trades per second over all its markets, split by volume share (exchange_sim/universe.py), "
        "plus CRYPTOFLOW_SIM_MIN_TRADE_RATE per market. 0: CRYPTOFLOW_SIM_TRADE_RATE per market instead.",
    )
    sim_min_trade_rate: float = _s(
        "CRYPTOFLOW_SIM_MIN_TRADE_RATE", "0.05", "Simulator: trades per second every market gets on top of its share."
    )
    sim_markets: str = _s(
        "CRYPTOFLOW_SIM_MARKETS",
        "",
        "Simulator: ALL = it also lists every recorded Upbit KRW market and 50 Binance USDT symbols (so ALL/TOP50 "
        "resolve from its REST as they would live). Empty: only CRYPTOFLOW_UPBIT_MARKETS / CRYPTOFLOW_BINANCE_SYMBOLS.",
    )
    sim_history_start: str = _s(
        "CRYPTOFLOW_SIM_HISTORY_START",
        "",
        "Simulator: first day of history, YYYY-MM-DD (overrides CRYPTOFLOW_SIM_HISTORY_DAYS). Empty: history days back.",
    )
    sim_firehose: str = _s(
        "CRYPTOFLOW_SIM_FIREHOSE", "", "Simulator: 1 = live streams send as fast as clients read, not at wall-clock pace."
    )
    sim_faults: str = _s(
        "CRYPTOFLOW_SIM_FAULTS", "", "Simulator: fault switches at start, JSON, e.g. {\"ws_disconnect_every_s\": 30}."
    )
    alert_rules: Path | None = _s("CRYPTOFLOW_ALERT_RULES", "", "Alert rules YAML. Empty: the packaged defaults.")
    digest_cron: str = _s("CRYPTOFLOW_DIGEST_CRON", "0 1 * * *", "When the daily Slack digest goes out (cron, UTC).")
    lake_maintenance_cron: str = _s(
        "CRYPTOFLOW_LAKE_MAINTENANCE_CRON",
        "*/10 * * * *",
        "Lake maintenance pass (cron, UTC): flush inlined rows to Parquet, rewrite delete-heavy files, merge small "
        "files, expire old snapshots, delete old files. Every turn it takes holds the lake's writers for well under a "
        "second (docs/decisions/0017).",
    )
    lake_catalog_upkeep_cron: str = _s(
        "CRYPTOFLOW_LAKE_CATALOG_UPKEEP_CRON",
        "40 2 * * *",
        "Lake catalog upkeep (cron, UTC): delete orphaned data files, then SQLite VACUUM + ANALYZE or Postgres "
        "VACUUM ANALYZE of the catalog.",
    )
    lake_snapshot_retention: timedelta | None = _s(
        "CRYPTOFLOW_LAKE_SNAPSHOT_RETENTION",
        "1 day",
        "Lake snapshots older than this are expired: time travel (AT (VERSION => n), AT (TIMESTAMP => t)) works "
        "inside it and fails with 'No snapshot found' beyond, e.g. '12 hours', '7 days'. 0: keep every snapshot.",
    )
    lake_snapshot_thin_after: timedelta | None = _s(
        "CRYPTOFLOW_LAKE_SNAPSHOT_THIN_AFTER",
        "1 hour",
        "Lake snapshots older than this keep only the last one of each minute (inside the retention): time travel to "
        "an older time gives the lake as it was at the end of the minute before. The stream commits about once a "
        "second, and each snapshot kept slows every commit a little (docs/decisions/0017). 0: thin none.",
    )
    lake_file_cleanup_delay: timedelta | None = _s(
        "CRYPTOFLOW_LAKE_FILE_CLEANUP_DELAY",
        "1 hour",
        "Data files no snapshot uses any more, and orphaned files, are deleted only this long after (a reader of an "
        "older snapshot still has them; it must exceed the longest lake transaction). On a SQLite catalog not before "
        "the UTC day they were replaced on has ended either (a DuckLake 1.5.5 limit). 0: as soon as possible.",
    )
    lake_target_file_size: str = _s(
        "CRYPTOFLOW_LAKE_TARGET_FILE_SIZE",
        "16MB",
        "Lake maintenance merges small files into files of up to this size (KB, MB, GB; KiB, MiB, GiB); "
        "files this big are left alone.",
    )
    lake_rewrite_delete_threshold: float = _s(
        "CRYPTOFLOW_LAKE_REWRITE_DELETE_THRESHOLD",
        "0.5",
        "Lake maintenance rewrites a data file once at least this share of its rows is deleted (0-1).",
    )

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def catalog_uri(self) -> str:
        """The DuckLake ATTACH target, e.g. ``ducklake:sqlite:data/lake/catalog.sqlite``."""
        if self.lake_catalog:
            return f"ducklake:{self.lake_catalog}"
        return f"ducklake:sqlite:{self.lake_dir / 'catalog.sqlite'}"

    @property
    def data_path(self) -> str:
        return self.lake_data_path or f"{self.lake_dir / 'data'}/"

    @property
    def extension_dir(self) -> Path:
        # A project-owned extension folder: a fresh machine fills it from the packaged binaries, and no run
        # depends on what someone once installed by hand in ~/.duckdb.
        return self.home / "duckdb_extensions"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def heartbeat_path(self) -> Path:
        return heartbeat_path(self.landing_dir, self.sidecar_shard)

    @property
    def sim_url(self) -> str:
        return f"http://{self.sim_host}:{self.sim_port}"


def _parse(name: str, raw: str, kind: type | str) -> object:
    try:
        if kind in (Path, "Path"):
            return Path(raw).expanduser()
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (date, "date"):
            return date.fromisoformat(raw)
        if str(kind).startswith("timedelta"):
            return parse_duration(raw)
        if str(kind).startswith("tuple"):
            return _split(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}") from None


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?", re.ASCII | re.IGNORECASE)
_DURATION_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def parse_duration(raw: str) -> timedelta | None:
    """``'1 day'``, ``'12 hours'``, ``'90 minutes'``, ``'1 week'``; ``'0'`` or empty is None (no limit)."""
    text = raw.strip()
    if text in ("", "0"):
        return None
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError("expected a number and a unit (seconds, minutes, hours, days, weeks), e.g. '7 days', or 0")
    return timedelta(seconds=float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()])


def setting_docs() -> list[Setting]:
    return [f.metadata["setting"] for f in fields(Settings)]


ENV_FILE = ".env"


def env_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The ``.env`` files a command reads, lowest precedence first: the working directory's, then CRYPTOFLOW_HOME's."""
    environ = os.environ if environ is None else environ
    project = Path.cwd() / ENV_FILE
    home = environ.get("CRYPTOFLOW_HOME") or _dotenv(project).get("CRYPTOFLOW_HOME") or "./data"
    home_file = Path(home).expanduser().resolve() / ENV_FILE
    return [project] if home_file == project.resolve() else [project, home_file]


def _dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_env_files(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add the ``.env`` files' variables that ``environ`` (default: the process environment) does not set.

    Returns the names and values added. Secrets in a ``.env`` (SLACK_BOT_TOKEN) reach ``dg.EnvVar`` this way: they are
    never copied into settings.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, str] = {}
    for path in env_files(environ):
        merged.update(_dotenv(path))
    added = {k: v for k, v in merged.items() if k not in environ}
    environ.update(added)
    return added


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (default: the process environment) and validate it."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in fields(Settings):
        doc: Setting = f.metadata["setting"]
        values[f.name] = _parse(doc.env, env.get(doc.env, doc.default), f.type)
    home = Path(values["home"]).resolve()
    values["home"] = home
    values["landing_dir"] = Path(values["landing_dir"]).resolve() if str(values["landing_dir"]) not in ("", ".") else home / "landing"
    if str(values["alert_rules"]) in ("", "."):
        values["alert_rules"] = None  # the rules packaged with the code location (alerting/rules.py)
    else:  # annotated `Path | None`, which _parse does not take for a Path: it was left a str (rules_for stats it)
        values["alert_rules"] = Path(values["alert_rules"]).expanduser()
    if market_selector("upbit", values["upbit_markets"]) is None:
        for market in values["upbit_markets"]:
            validate_upbit_market(market)
    if market_selector("binance", values["binance_symbols"]) is None:
        for symbol in values["binance_symbols"]:
            validate_binance_symbol(symbol)
    if values["stream_markets_per_connection"] < 1:
        raise SettingsError("CRYPTOFLOW_STREAM_MARKETS_PER_CONNECTION: expected at least 1")
    if values["backfill_days_per_run"] < 1:
        raise SettingsError(f"CRYPTOFLOW_BACKFILL_DAYS_PER_RUN={values['backfill_days_per_run']}: expected at least 1")
    if values["forecast_min_train_days"] < 23:
        raise SettingsError(f"CRYPTOFLOW_FORECAST_MIN_TRAIN_DAYS={values['forecast_min_train_days']}: expected at least 23")
    if not 0 <= values["alert_watch_s"] <= 45:  # a sensor tick must end well inside Dagster's 60 s evaluation timeout
        raise SettingsError(f"CRYPTOFLOW_ALERT_WATCH_S={values['alert_watch_s']}: expected 0 to 45 seconds")
    if values["sidecar_shard"] and not SHARD_RE.fullmatch(values["sidecar_shard"]):  # it becomes part of a file name
        raise SettingsError(f"CRYPTOFLOW_SIDECAR_SHARD={values['sidecar_shard']!r}: expected 1-32 of a-z, 0-9, -")
    if values["duckdb_memory_limit"] and not MEMORY_LIMIT_RE.fullmatch(values["duckdb_memory_limit"]):
        raise SettingsError(
            f"CRYPTOFLOW_DUCKDB_MEMORY_LIMIT={values['duckdb_memory_limit']!r}: expected a number and a unit "
            "(KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 3GB"
        )
    if not MEMORY_LIMIT_RE.fullmatch(values["lake_target_file_size"]):
        raise SettingsError(
            f"CRYPTOFLOW_LAKE_TARGET_FILE_SIZE={values['lake_target_file_size']!r}: expected a number and a unit, e.g. 16MB"
        )
    if not 0 <= values["background_nice"] <= 19:
        raise SettingsError(f"CRYPTOFLOW_BACKGROUND_NICE={values['background_nice']}: expected 0 to 19")
    if values["api_rate_limit"] < 0:
        raise SettingsError(f"CRYPTOFLOW_API_RATE_LIMIT={values['api_rate_limit']}: expected 0 (no limit) or more")
    if not 0 < values["lake_rewrite_delete_threshold"] <= 1:
        raise SettingsError(
            f"CRYPTOFLOW_LAKE_REWRITE_DELETE_THRESHOLD={values['lake_rewrite_delete_threshold']}: expected more than 0, "
            "at most 1"
        )
    return Settings(**values)
