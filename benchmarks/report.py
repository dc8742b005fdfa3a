"""BENCHMARKS.md's measured section, generated from benchmarks/results/*.json between two marker lines.

Everything outside the markers (the analysis, profiles, before/after notes) is written by hand and kept as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import REPO, RESULTS

BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.run rewrites this section from benchmarks/results/*.json -->"
END = "<!-- END GENERATED -->"
ORDER = ("sidecar_ingest", "freshness", "batch", "backfill", "dagster_overhead")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render(results_dir: Path = RESULTS) -> str:
    docs = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        docs[data["benchmark"]] = data
    names = [n for n in ORDER if n in docs] + sorted(n for n in docs if n not in ORDER)
    out = [BEGIN, ""]
    for name in names:
        d = docs[name]
        m = d["machine"]
        out.append(f"### {name}")
        out.append("")
        out.append(f"{d['size']}. Measured {d['started_at']} ({d['wall_s']:.0f} s), {m['cores']} cores, "
                   f"{m['memory_gib']} GiB, load average (1/5/15 min) at start "
                   f"{' / '.join(str(x) for x in d.get('load_avg_at_start', []) or ['?'])}, at end "
                   f"{m['load_avg'][0]} / {m['load_avg'][1]} / {m['load_avg'][2]}; "
                   f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".")
        out.append("")
        out.append("| figure | median | min | max | runs | baseline | target | verdict |")
        out.append("|---|---:|---:|---:|---:|---|---|---|")
        for f in d["figures"]:
            verdict = {"pass": "**pass**", "miss": "**MISS**"}.get(f["verdict"] or "", "")
            name_cell = f["name"] + (f" ({f['note']})" if f.get("note") else "")
            out.append(f"| {name_cell} | {_num(f['median'])} {f['unit']} | {_num(f['min'])} | {_num(f['max'])} | "
                       f"{f['runs']} | {f['baseline'] or ''} | {f['target'] or ''} | {verdict} |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def update_markdown(results_dir: Path = RESULTS, path: Path = REPO / "BENCHMARKS.md") -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Measured\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + render(results_dir) + tail)
