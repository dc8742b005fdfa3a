"""What every benchmark shares: repetition statistics, the machine description, figures beside their baseline and
target, child processes measured from /proc, and the JSON result files (benchmarks/results/<name>.json)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
REPO = ROOT.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def summarize(values: list[float]) -> dict[str, Any]:
    """Median, min and max of one figure's repetitions (the raw values are kept so nothing is hidden)."""
    clean = [float(v) for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": 0, "values": []}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "runs": len(clean),
            "values": [round(v, 6) for v in clean]}


@dataclass
class Figure:
    """One measured figure: its repetitions, what it is compared with, and the target it must meet.

    ``target`` is (operator, value) with operator ">=" or "<="; ``baseline`` names a figure measured in the same run.
    """

    name: str
    unit: str
    values: list[float]
    target: tuple[str, float] | None = None
    baseline: str | None = None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        stats = summarize(self.values)
        verdict = None
        if self.target and stats["median"] is not None:
            op, want = self.target
            verdict = "pass" if (stats["median"] >= want if op == ">=" else stats["median"] <= want) else "miss"
        return {"name": self.name, "unit": self.unit, **stats,
                "target": f"{self.target[0]} {self.target[1]:g}" if self.target else None, "verdict": verdict,
                "baseline": self.baseline, "note": self.note}


@dataclass
class Result:
    benchmark: str
    size: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    load_at_start: list[float] = field(default_factory=lambda: [round(x, 2) for x in os.getloadavg()])

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        return fig

    def as_json(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "size": self.size,
                "started_at": datetime.fromtimestamp(self.started, timezone.utc).isoformat(timespec="seconds"),
                "wall_s": round(time.time() - self.started, 1), "load_avg_at_start": self.load_at_start,
                "machine": machine(),
                "figures": [f.as_json() for f in self.figures], "details": self.details}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine a figure was measured on, including how busy it was (a shared box: load matters)."""
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 2**20, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": {d: _version(d) for d in ("duckdb", "polars", "pyarrow", "dagster", "websockets", "uvicorn",
                                               "orjson", "pandas", "pyspark", "httpx")},
    }


def write_result(result: Result, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.benchmark}.json"
    path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    return path


# ---- child processes, measured from outside ------------------------------------------------------------------------
def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (threads included)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def disk_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (a file removed while walking is skipped)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def python_child(module: str, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=REPO, stdout=out, stderr=out)


def run_json_child(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m module args`` and parse the JSON object it prints last; its peak RSS comes from wait4."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"{module} {args} did not finish in {timeout:.0f}s: {err.decode()[-2000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} exited {proc.returncode}: {err.decode()[-3000:]}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{module} {args} printed no JSON: {out.decode()[-1000:]} {err.decode()[-2000:]}")
    return json.loads(lines[-1])


def peak_rss_mib() -> float:
    """This process's peak resident memory (``ru_maxrss`` is KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (PySpark's JVM is a child of the Python driver)."""
    tree, total, todo = _children_of(), 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += proc_rss_mib(p)
        except OSError:
            pass
        todo += tree.get(p, [])
    return total


def run_sampled(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 7200,
                every_s: float = 0.25) -> tuple[dict[str, Any], float]:
    """Run ``python -m module args``; return the JSON it prints last and the peak RSS of its process tree (MiB)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=REPO, stdout=out, stderr=err)
        peak, deadline = 0.0, time.monotonic() + timeout
        while proc.poll() is None:
            peak = max(peak, tree_rss_mib(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{module} {args} did not finish in {timeout:.0f}s")
            time.sleep(every_s)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {args} exited {proc.returncode}: {errors[-3000:]}")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{module} {args} printed no JSON: {text[-1000:]} {errors[-2000:]}")
    return json.loads(lines[-1]), peak
