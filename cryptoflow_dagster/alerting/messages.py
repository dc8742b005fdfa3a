"""Block Kit messages: market alerts, failed/recovered checks, stale/fresh-again assets, sidecar down/back, run
failures, the daily digest.

Every string that leaves for Slack passes :func:`redact`, so a token that slipped into an error or check metadata is
never posted.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

_TOKEN_RE = re.compile(r"xox[a-z]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+")
_EMOJI = {
    "price_move": ":chart_with_upwards_trend:",
    "volume_spike": ":bar_chart:",
    "volatility": ":zap:",
    "kimchi_premium": ":flag-kr:",
    "check_failed": ":x:",
    "check_recovered": ":white_check_mark:",
    "asset_stale": ":hourglass_flowing_sand:",
    "asset_fresh": ":white_check_mark:",
    "sidecar_down": ":rotating_light:",
    "sidecar_recovered": ":white_check_mark:",
    "run_failure": ":x:",
    "daily_digest": ":newspaper:",
}


def redact(text: str) -> str:
    token = os.environ.get("SLACK_BOT_TOKEN")
    if token:
        text = text.replace(token, "[redacted]")
    return _TOKEN_RE.sub("[redacted]", text)


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_tree(v) for k, v in value.items()}
    return value


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text[:3000]}


def link(ui_url: str, path: str) -> str:
    return ui_url.rstrip("/") + "/" + path.lstrip("/")


def alert_message(row: dict[str, Any], ui_url: str) -> tuple[str, list[dict]]:
    """(fallback text, blocks) for one gold.alerts row."""
    details = json.loads(row.get("details_json") or "{}")
    title = details.get("title") or row["rule"].replace("_", " ")
    emoji = _EMOJI.get(row["rule"], ":bell:")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}"[:150], "emoji": True}},
        {"type": "section", "text": _mrkdwn(f"{emoji} {row['message']}")},
    ]
    fields = [_mrkdwn(f"*{k}*\n{v}") for k, v in (details.get("fields") or {}).items()][:10]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    for extra in details.get("sections") or []:
        blocks.append({"type": "section", "text": _mrkdwn(extra)})
    context = []
    if details.get("link"):
        context.append(f"<{link(ui_url, details['link'])}|Open in Dagster>")
    if row.get("event_time") is not None:
        context.append(f"event {row['event_time']:%Y-%m-%d %H:%M:%S} UTC")
    context.append(f"alert `{row['alert_id']}`")
    blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(context))]})
    return redact(f"{title}: {row['message']}"), _redact_tree(blocks)
