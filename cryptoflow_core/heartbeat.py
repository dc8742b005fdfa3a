"""The sidecar's observable state: a heartbeat file rewritten every second, and gap candidates appended as JSON lines.

Both live beside the landing folders (``_heartbeat.json``, ``_gaps/``), outside the ``<exchange>/<channel>`` tree the
sensor lists. The Dagster side reads them: the heartbeat for liveness alerts and downtime, the gap lines for repair.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

GAPS_DIR = "_gaps"


def utc_iso(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat()


@dataclass
class StreamState:
    state: str = "starting"  # starting | connecting | connected | backoff | stopped
    session_id: str | None = None
    connected_since: float | None = None
    last_message_at: float | None = None
    messages: int = 0
    malformed: int = 0
    reconnects: int = 0
    # Receive time minus trade time, the most seen: gap windows are in receive time, repairs filter on trade time.
    lag_s: float = 0.0
    # Start of a disconnect window not yet written to the gap file (it is, once the next connection delivers a trade).
    gap_since: float | None = None


@dataclass
class Heartbeat:
    writer_id: str
    started_at: float = field(default_factory=time.time)
    streams: dict[str, StreamState] = field(default_factory=dict)
    files: int = 0
    spilled: int = 0
    # Every message received before this time is in a landing file (or the spill): a crash loses only what came after.
    flushed_through: float | None = None

    def as_json(self) -> bytes:
        streams = {}
        for name, s in self.streams.items():
            d = asdict(s)
            for key in ("connected_since", "last_message_at", "gap_since"):
                d[key] = utc_iso(d[key])
            streams[name] = d
        return orjson.dumps(
            {
                "pid": os.getpid(),
                "writer_id": self.writer_id,
                "started_at": utc_iso(self.started_at),
                "updated_at": utc_iso(time.time()),
                "flushed_through": utc_iso(self.flushed_through),
                "streams": streams,
                "counters": {
                    "messages": sum(s.messages for s in self.streams.values()),
                    "files": self.files,
                    "reconnects": sum(s.reconnects for s in self.streams.values()),
                    "malformed": sum(s.malformed for s in self.streams.values()),
                    "spilled": self.spilled,
                },
            },
            option=orjson.OPT_INDENT_2,
        )

    def write(self, path: Path) -> None:
        """Replace the heartbeat atomically: a reader gets the old or the new file, never a torn one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(self.as_json())
        os.replace(tmp, path)


# The names Settings.heartbeat_path gives: "" for an unsharded sidecar, else the shard (a-z, 0-9, -).
_HEARTBEAT_NAME = re.compile(r"^_heartbeat(?:\.(?P<shard>[a-z0-9-]{1,32}))?\.json\Z", re.ASCII)


def heartbeat_files(landing: Path) -> dict[str, Path]:
    """Every sidecar heartbeat file under ``landing``, by shard name ("" for an unsharded sidecar)."""
    found = {}
    if landing.is_dir():
        for path in landing.glob("_heartbeat*.json"):
            match = _HEARTBEAT_NAME.match(path.name)
            if match:
                found[match.group("shard") or ""] = path
    return found


def heartbeat_path(landing: Path, shard: str) -> Path:
    return landing / (f"_heartbeat.{shard}.json" if shard else "_heartbeat.json")


def last_beat(path: Path) -> tuple[datetime | None, dict]:
    """(last beat time, the file's other top-level scalars), or (None, {}) when there is no file."""
    try:
        stat = path.stat()
        raw = path.read_text()
    except FileNotFoundError:
        return None, {}
    try:
        doc = orjson.loads(raw)
        beat = datetime.fromisoformat(str(doc["updated_at"]).replace("Z", "+00:00"))
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        log.warning("heartbeat %s has no readable updated_at (%s): using its modification time", path, exc)
        return datetime.fromtimestamp(stat.st_mtime, timezone.utc), {}
    extra = {k: str(v) for k, v in doc.items() if k != "updated_at" and isinstance(v, (str, int, float, bool))}
    return beat, extra


def read_heartbeat(path: Path) -> dict | None:
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def record_gap(
    landing: Path,
    exchange: str,
    markets: tuple[str, ...],
    start_s: float,
    end_s: float,
    reason: str,
    session_id: str,
) -> None:
    """Append a window in which ``exchange`` may have traded unseen; the repair job turns it into ``ops.gaps`` rows."""
    folder = landing / GAPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(
        {
            "exchange": exchange,
            "markets": list(markets),
            "start": utc_iso(start_s),
            "end": utc_iso(end_s),
            "reason": reason,
            "session_id": session_id,
        }
    )
    # O_APPEND writes of one short line are atomic enough: a torn last line is skipped by the reader.
    with open(folder / f"{exchange}.jsonl", "ab") as fh:
        fh.write(line + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_gap_candidates(landing: Path) -> list[dict]:
    out: list[dict] = []
    folder = landing / GAPS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return out
