"""``cryptoflow``: the one console script (pyproject ``[project.scripts]``). Each subcommand (a module, or a
:class:`~cryptoflow_dagster.cli.delegated.Delegated` for those that hand over to another program) exposes
``register(subparsers)`` and a ``run(args) -> int`` that the parser calls. Heavy imports (Dagster, DuckDB, the
simulator) happen inside ``run`` so that ``cryptoflow --help`` is instant and one missing part breaks only its command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cryptoflow_core.settings import load_env_files
from cryptoflow_dagster.cli import demo, doctor, query, restore, snapshots
from cryptoflow_dagster.cli.delegated import BACKFILL, SIM, SLO, STREAM
from cryptoflow_dagster.cli.errors import CliError
from cryptoflow_dagster.cli.serve import SERVE

COMMANDS = (demo, SIM, STREAM, query, snapshots, restore, doctor, BACKFILL, SLO, SERVE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryptoflow",
        description="CryptoFlow: crypto market data (Upbit, Binance, Fear & Greed) into a DuckLake lakehouse, run by Dagster.",
        epilog="Settings come from CRYPTOFLOW_* environment variables, then .env in the working directory and in "
        "CRYPTOFLOW_HOME (the environment wins); .env.example lists them all.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    load_env_files()  # every command sees the .env files (and the settings a running demo wrote); the environment wins
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", None) is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    else:
        args.passthrough = extra  # the delegated program parses these (and answers its own --help)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        for chatty in ("httpx", "httpcore", "alembic"):  # one line per request / migration step drowns the output
            logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except CliError as exc:
        print(f"cryptoflow {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
