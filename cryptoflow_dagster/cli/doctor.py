"""``cryptoflow doctor``: is this machine ready to run the platform? One line per check, exit code 0 or 1.

Checks never print a secret: for SLACK_BOT_TOKEN only whether it is set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptoflow_core.settings import Settings, SettingsError, load_settings

HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check settings, extensions, lake, exchanges and Slack token",
        description="Check that the platform can run here: settings parse, DuckDB extensions are installed, the lake "
        "opens, each exchange base URL answers, and SLACK_BOT_TOKEN is set (its value is never printed). "
        "Prints one OK/FAIL line per check; exit code 0 when all pass, 1 otherwise.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks = list(run_checks(dict(os.environ)))
    for check in checks:
        print(check.line(), flush=True)
    failed = [c for c in checks if not c.ok]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


def run_checks(env: dict[str, str]) -> Iterator[Check]:
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        yield Check("settings", False, str(exc))
        return  # every other check needs the settings
    yield Check("settings", True, f"CRYPTOFLOW_HOME={settings.home}")
    yield _guard("extensions", lambda: check_extensions(settings))
    yield _guard("lake", lambda: check_lake(settings))
    for name, url in exchange_probes(settings):
        yield _guard(name, lambda url=url: check_http(url))
    yield check_slack_token(env)


def _guard(name: str, probe: Callable[[], str]) -> Check:
    """Run one probe; any exception is that check's failure, with its message, and the next check still runs."""
    try:
        return Check(name, True, probe())
    except Exception as exc:  # noqa: BLE001 - a doctor reports every failure instead of stopping at the first
        return Check(name, False, f"{type(exc).__name__}: {exc}".strip())


def check_extensions(settings: Settings) -> str:
    from cryptoflow_dagster import lake

    names = lake.needed_extensions(settings)
    for name in names:
        lake.packaged_extension(name)
    return "packaged: " + ", ".join(names)


def check_lake(settings: Settings) -> str:
    from cryptoflow_dagster import lake

    with lake.session(settings) as con:
        tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ?", [lake.CATALOG]
        ).fetchone()[0]
    return f"{settings.catalog_uri} opens read-write ({tables} tables), data at {settings.data_path}"


def exchange_probes(settings: Settings) -> list[tuple[str, str]]:
    """A cheap public GET per exchange that needs no key and that the simulator serves too."""
    symbol = settings.binance_symbols[0] if settings.binance_symbols else "BTCUSDT"
    return [
        ("upbit", f"{settings.upbit_rest_url.rstrip('/')}/v1/market/all"),
        ("binance", f"{settings.binance_rest_url.rstrip('/')}/api/v3/klines?symbol={symbol}&interval=1d&limit=1"),
        ("fear_greed", f"{settings.fear_greed_url.rstrip('/')}/fng/?limit=1&format=json"),
    ]


def check_http(url: str) -> str:
    import httpx

    response = httpx.get(url, timeout=HTTP_TIMEOUT_S)
    if response.status_code >= 400:
        raise RuntimeError(f"GET {url} answered HTTP {response.status_code}")
    return f"GET {url} -> HTTP {response.status_code}"


def check_slack_token(env: dict[str, str]) -> Check:
    if env.get("SLACK_BOT_TOKEN", "").strip():
        return Check("slack_token", True, "SLACK_BOT_TOKEN is set")
    return Check("slack_token", False, "SLACK_BOT_TOKEN is not set: alerts cannot be delivered to Slack")
