"""``cryptoflow slo``: report the platform's service-level objectives (freshness, latency, completeness)."""

from __future__ import annotations

import argparse

from cryptoflow_dagster.cli.errors import load_entry_point


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "slo",
        help="report service-level objectives",
        description="Report freshness, end-to-end latency and completeness against the platform's objectives. "
        "Arguments after `slo` go to cryptoflow_dagster.slo: `cryptoflow slo --help` lists them.",
        add_help=False,
    )
    parser.set_defaults(run=run, passthrough=[])


def run(args: argparse.Namespace) -> int:
    main = load_entry_point("cryptoflow_dagster.slo", what="the SLO report (cryptoflow slo)")
    return int(main(list(args.passthrough)) or 0)
