"""Subcommands that hand every argument to another program's ``main(argv)``: that program's own parser answers
``--help``, so its flags are documented once, where they are defined. The module is imported only when the command runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cryptoflow_dagster.cli.errors import load_entry_point


@dataclass(frozen=True)
class Delegated:
    name: str
    module: str  # exposes main(argv) -> int
    what: str  # named in the error when the module cannot be imported
    help: str
    description: str

    def register(self, subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description, add_help=False)
        parser.set_defaults(run=self.run, passthrough=[])

    def run(self, args: argparse.Namespace) -> int:
        main = load_entry_point(self.module, what=self.what)
        return int(main(list(args.passthrough)) or 0)


SIM = Delegated(
    "sim",
    "exchange_sim.server",
    "the exchange simulator (cryptoflow sim)",
    "run the offline exchange simulator",
    "Run the exchange simulator (exchange_sim). Every argument after `sim` goes to the simulator: "
    "`cryptoflow sim --help` lists them. Defaults come from CRYPTOFLOW_SIM_* settings.",
)
STREAM = Delegated(
    "stream",
    "streaming_sensor.sidecar",
    "the streaming sidecar (cryptoflow stream)",
    "run the WebSocket sidecar (trades -> landing files)",
    "Run the streaming sidecar: connects to the exchanges' WebSockets (CRYPTOFLOW_*_WS_URL) and writes "
    "micro-batch files under the landing folder. Every argument after `stream` goes to the sidecar: "
    "`cryptoflow stream --help` lists them.",
)
BACKFILL = Delegated(
    "backfill",
    "cryptoflow_dagster.backfill",
    "backfills (cryptoflow backfill)",
    "backfill a date range through the Dagster webserver",
    "Launch a backfill of daily partitions on the Dagster webserver at CRYPTOFLOW_UI_URL and print its "
    "progress until it ends (exit code non-zero on failure). Arguments after `backfill` go to "
    "cryptoflow_dagster.backfill: `cryptoflow backfill --help` lists them.",
)
SLO = Delegated(
    "slo",
    "cryptoflow_dagster.slo",
    "the SLO report (cryptoflow slo)",
    "report per-stage latency of the near-real-time path",
    "Report per-stage and end-to-end latency (p50/p95/p99) of the near-real-time path from what the lake recorded. "
    "Arguments after `slo` go to cryptoflow_dagster.slo: `cryptoflow slo --help` lists them.",
)
