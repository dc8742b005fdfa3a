"""``cryptoflow stream``: the WebSocket sidecar that writes micro-batch files for the streaming sensor."""

from __future__ import annotations

import argparse

from cryptoflow_dagster.cli.errors import load_entry_point

SIDECAR_MODULE = "streaming_sensor.sidecar"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="run the WebSocket sidecar (trades -> landing files)",
        description="Run the streaming sidecar: connects to the exchanges' WebSockets (CRYPTOFLOW_*_WS_URL) and writes "
        "micro-batch files under the landing folder. Every argument after `stream` goes to the sidecar: "
        "`cryptoflow stream --help` lists them.",
        add_help=False,
    )
    parser.set_defaults(run=run, passthrough=[])


def run(args: argparse.Namespace) -> int:
    main = load_entry_point(SIDECAR_MODULE, what="the streaming sidecar (cryptoflow stream)")
    return int(main(list(args.passthrough)) or 0)
