"""Fault switches: set at start (``--faults`` JSON) or at run time (POST /_sim/faults), read by every adapter.

Faults are counter-based rather than random so a test can say exactly which message or request misbehaves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class Faults:
    ws_disconnect_every_s: float = 0.0  # close every WebSocket after this long (0: never)
    ws_malformed_every: int = 0  # after every Nth message, one frame of broken JSON
    ws_duplicate_every: int = 0  # every Nth message is sent twice
    ws_out_of_order_every: int = 0  # every Nth message swaps places with the one after it
    ws_schema_drift_after: int = 0  # from the Nth message on, messages carry an extra field
    rest_slow_ms: int = 0  # delay every exchange REST answer
    rest_5xx_every: int = 0  # every Nth exchange REST request answers 503
    rest_429_burst: int = 0  # the next N exchange REST requests answer 429 (counts down)
    slack_status: int = 0  # 429 or 500: the Slack sink fails with this status

    def update(self, changes: dict) -> None:
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise ValueError(f"unknown fault switch(es) {unknown}; known: {sorted(known)}")
        for name, value in changes.items():
            current = getattr(self, name)
            try:
                setattr(self, name, type(current)(value))
            except (TypeError, ValueError):
                raise ValueError(f"fault {name} wants a {type(current).__name__}, got {value!r}") from None
        if self.slack_status not in (0, 429, 500):
            raise ValueError("slack_status must be 0, 429 or 500")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def ws_active(self) -> bool:
        return bool(self.ws_malformed_every or self.ws_duplicate_every or self.ws_out_of_order_every or self.ws_schema_drift_after)


DRIFT_FIELD = '"sim_added_field":"drift"'
MALFORMED_FRAME = '{"type":"trade","code":'  # a frame cut mid-object


class FrameFaults:
    """Per-connection message mangling, counted per message: drift, then duplicates, swaps and garbage frames.

    ``drift_offset`` is how many closing characters follow the payload object in a frame: 1 for ``{...}``, 2 for a
    Binance combined ``{"stream":..,"data":{...}}`` or an Upbit list ``[{...}]``, so the field lands in the payload.
    """

    def __init__(self, faults: Faults, drift_offset: int = 1):
        self.faults = faults
        self.drift_offset = drift_offset
        self.sent = 0
        self.pending = None  # a frame held back to go out after the next one (kept across sends)

    def _drift(self, frame: str) -> str:
        k = self.drift_offset
        return frame[:-k] + "," + DRIFT_FIELD + frame[-k:]

    def arrange(self, frames: list) -> list:
        f = self.faults
        out: list = []
        pending, self.pending = self.pending, None
        for frame in frames:
            self.sent += 1
            n = self.sent
            if f.ws_schema_drift_after and n >= f.ws_schema_drift_after and isinstance(frame, str):
                frame = self._drift(frame)
            if pending is not None:
                out.extend((frame, pending))
                pending = None
            elif f.ws_out_of_order_every and n % f.ws_out_of_order_every == 0:
                pending = frame
                continue
            else:
                out.append(frame)
            if f.ws_duplicate_every and n % f.ws_duplicate_every == 0:
                out.append(frame)
            if f.ws_malformed_every and n % f.ws_malformed_every == 0:
                out.append(MALFORMED_FRAME)
        self.pending = pending
        return out
