"""``cryptoflow sim``: the offline exchange simulator (Upbit, Binance, Fear & Greed, a Slack sink) on 127.0.0.1."""

from __future__ import annotations

import argparse

from cryptoflow_dagster.cli.errors import load_entry_point


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the offline exchange simulator",
        description="Run the exchange simulator (exchange_sim). Every argument after `sim` goes to the simulator: "
        "`cryptoflow sim --help` lists them. Defaults come from CRYPTOFLOW_SIM_* settings.",
        add_help=False,  # --help belongs to the simulator's own parser
    )
    parser.set_defaults(run=run, passthrough=[])


def run(args: argparse.Namespace) -> int:
    main = load_entry_point("exchange_sim.server", what="the exchange simulator (cryptoflow sim)")
    return int(main(list(args.passthrough)) or 0)
