"""``python -m benchmarks.run [--quick] [--only NAME ...] [--runs N]`` (``make bench BENCH_ARGS=--quick``).

Runs each benchmark, writes benchmarks/results/<name>.json and regenerates the measured tables in BENCHMARKS.md from
every results file present (so one benchmark can be re-run alone without losing the others' figures).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from pathlib import Path

from benchmarks.common import RESULTS, write_result
from benchmarks.report import update_markdown

# Run order: cheapest and most independent first; freshness needs the whole platform for minutes, endurance for an
# hour (--quick: 10 minutes).
BENCHMARKS = ("sidecar_ingest", "backfill", "dagster_overhead", "batch", "freshness", "lake_day", "api", "dashboard",
              "endurance")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the small size: a few minutes per benchmark")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="repeatable; default: all")
    parser.add_argument("--runs", type=int, default=5, help="repetitions per figure (median, min, max); default 5")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"== {name} ({'quick' if args.quick else 'full'}, {args.runs} runs)", flush=True)
        try:
            result = importlib.import_module(f"benchmarks.{name}").run(args.quick, args.runs)
        except Exception:  # one broken benchmark must not cost the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        path = write_result(result, args.out)
        for fig in result.as_json()["figures"]:
            print(f"   {fig['name']}: median {fig['median']!s:.10} {fig['unit']} "
                  f"(min {fig['min']!s:.10}, max {fig['max']!s:.10}) target {fig['target']} -> {fig['verdict']}")
        print(f"   wrote {path}", flush=True)
    if not args.no_markdown:
        update_markdown(args.out)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
