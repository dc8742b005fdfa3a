"""``cryptoflow backfill``: launch a partition backfill through the running Dagster webserver and follow it."""

from __future__ import annotations

import argparse

from cryptoflow_dagster.cli.errors import load_entry_point


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="backfill a date range through the Dagster webserver",
        description="Launch a backfill of daily partitions on the Dagster webserver at CRYPTOFLOW_UI_URL and print its "
        "progress until it ends (exit code non-zero on failure). Arguments after `backfill` go to "
        "cryptoflow_dagster.backfill: `cryptoflow backfill --help` lists them.",
        add_help=False,
    )
    parser.set_defaults(run=run, passthrough=[])


def run(args: argparse.Namespace) -> int:
    main = load_entry_point("cryptoflow_dagster.backfill", what="backfills (cryptoflow backfill)")
    return int(main(list(args.passthrough)) or 0)
