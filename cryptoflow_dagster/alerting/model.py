"""The alert record as it is written to ``gold.alerts`` (the outbox row)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

# Outbox states. ``sending`` marks a claimed row whose post is in flight: see docs/decisions/0005-alert-outbox.md.
PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"


@dataclass(frozen=True)
class Alert:
    rule: str
    dedupe_key: str
    message: str
    triggered_at: datetime
    exchange: str | None = None
    market: str | None = None
    event_time: datetime | None = None
    value: float | None = None
    threshold: float | None = None
    # Per-alert cooldown: another alert of the same rule and subject within this many seconds is suppressed.
    cooldown_s: float = 0.0
    # Extra Block Kit fields and a UI link, kept out of the contract columns (stored in ``details_json``).
    details: dict = field(default_factory=dict, compare=False)

    @property
    def alert_id(self) -> str:
        # Derived from the dedupe key, so re-recording the same alert can never mint a second id.
        return hashlib.sha256(self.dedupe_key.encode()).hexdigest()[:24]

    @property
    def subject(self) -> str:
        """What a cooldown is counted over: the rule and its market (or check, or sidecar)."""
        return f"{self.rule}|{self.exchange or ''}|{self.market or ''}"
