"""``cryptoflow doctor``: is this machine ready to run the platform? One line per check, exit code 0 or 1.

It checks what the settings point at: the real exchanges and Slack, or (beside ``cryptoflow demo``, whose settings
every command reads from ``$CRYPTOFLOW_HOME/.env``) the simulator and its Slack sink. Checks never print a secret: for
SLACK_BOT_TOKEN only whether it is set, and it is never sent anywhere but Slack.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptoflow_core.settings import Settings, SettingsError, load_settings, market_selector

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
        help="check settings, extensions, lake, exchanges and Slack",
        description="Check that the platform can run here: settings parse, DuckDB extensions are installed, the lake "
        "opens, each exchange base URL answers, and Slack can be reached: SLACK_BOT_TOKEN is set for the real Slack "
        "(its value is never printed), or the Slack-compatible sink at CRYPTOFLOW_SLACK_API_URL (the demo's) answers. "
        "Beside a running `cryptoflow demo` it checks the demo's simulator and sink (settings from "
        "$CRYPTOFLOW_HOME/.env). Prints one OK/FAIL line per check; exit code 0 when all pass, 1 otherwise.",
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
    yield _guard("slack", lambda: check_slack(settings, env))


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
    listed = [] if market_selector("binance", settings.binance_symbols) else settings.binance_symbols  # TOP50: no symbol yet
    symbol = listed[0] if listed else "BTCUSDT"
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


def check_slack(settings: Settings, env: dict[str, str]) -> str:
    """The real Slack: SLACK_BOT_TOKEN must be set (not sent: doctor does not post). Any other URL is a Slack-compatible
    sink (the simulator's in the demo, which needs no token): it must answer auth.test, asked with the placeholder
    token the platform gives local sinks, never with the person's own."""
    from cryptoflow_dagster.alerting.slack import LOCAL_SINK_TOKEN, SLACK_DEFAULT_API_URL

    token_set = bool(env.get("SLACK_BOT_TOKEN", "").strip())
    url = settings.slack_api_url
    if url.rstrip("/") == SLACK_DEFAULT_API_URL.rstrip("/"):
        if not token_set:
            raise RuntimeError("SLACK_BOT_TOKEN is not set: alerts cannot be delivered to Slack")
        return "SLACK_BOT_TOKEN is set"
    import httpx

    probe = f"{url.rstrip('/')}/auth.test"
    response = httpx.post(probe, headers={"Authorization": f"Bearer {LOCAL_SINK_TOKEN}"}, timeout=HTTP_TIMEOUT_S)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400 or not body.get("ok"):
        raise RuntimeError(f"POST {probe} answered HTTP {response.status_code} {body.get('error', '')}".strip())
    token = "SLACK_BOT_TOKEN is set" if token_set else "no token needed"
    return f"Slack-compatible sink at {url} answers auth.test ({token})"
