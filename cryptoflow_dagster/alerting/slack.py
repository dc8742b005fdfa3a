"""Posting to Slack's Web API (or a Slack-compatible server at ``CRYPTOFLOW_SLACK_API_URL``) and classifying the outcome.

``slack_sdk.WebClient`` is used with its own retry handlers switched off: retries, backoff and Retry-After are the outbox's
job (delivery.py), so that every attempt is counted in ``gold.alerts`` and none happens behind its back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptoflow_dagster.alerting.messages import redact

if TYPE_CHECKING:
    from slack_sdk.errors import SlackApiError

SLACK_DEFAULT_API_URL = "https://slack.com/api/"
# Slack answers these with HTTP 200 and ok=false, yet they are Slack's trouble, not ours: worth another try.
_TRANSIENT_ERRORS = {"ratelimited", "service_unavailable", "fatal_error", "internal_error", "request_timeout"}


@dataclass(frozen=True)
class PostOutcome:
    ok: bool
    error: str | None = None
    retry_after_s: float | None = None  # set on a rate limit (HTTP 429)
    permanent: bool = False  # retrying cannot help (bad channel, bad token, bad blocks)
    ts: str | None = None


def web_client(token: str | None, base_url: str = SLACK_DEFAULT_API_URL, timeout_s: float = 10.0):
    """A ``slack_sdk.WebClient`` for ``base_url`` with slack_sdk's own retry handlers off (the outbox retries)."""
    from slack_sdk import WebClient  # on first use, not at import: loading the code location does not need it

    base_url = base_url if base_url.endswith("/") else base_url + "/"
    return WebClient(token=token or None, base_url=base_url, timeout=int(timeout_s), retry_handlers=[])


class SlackPoster:
    """One channel's ``chat.postMessage``; the token stays inside the WebClient (Authorization header only)."""

    def __init__(self, token: str | None, base_url: str = SLACK_DEFAULT_API_URL, channel: str = "#cryptoflow-alerts",
                 timeout_s: float = 10.0) -> None:
        self.channel = channel
        self._client = web_client(token, base_url, timeout_s)

    def post(self, text: str, blocks: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> PostOutcome:
        from slack_sdk.errors import SlackApiError  # loaded with WebClient in __init__

        try:
            resp = self._client.chat_postMessage(channel=self.channel, text=text, blocks=blocks, metadata=metadata,
                                                 unfurl_links=False)
            return PostOutcome(ok=True, ts=resp.get("ts"))
        except SlackApiError as exc:
            return _classify(exc)
        except Exception as exc:  # connection refused, reset, timeout: Slack is unreachable for now
            return PostOutcome(ok=False, error=redact(f"{type(exc).__name__}: {exc}"))


def _classify(exc: SlackApiError) -> PostOutcome:
    status = exc.response.status_code
    error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
    if status == 429 or error == "ratelimited":
        raw = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after") or "1"
        try:
            retry_after = max(0.0, float(raw))
        except ValueError:
            retry_after = 1.0
        return PostOutcome(ok=False, error=f"rate limited (HTTP {status}, Retry-After {raw})", retry_after_s=retry_after)
    text = redact(f"HTTP {status}: {error or 'error'}")
    if status >= 500 or error in _TRANSIENT_ERRORS:
        return PostOutcome(ok=False, error=text)
    return PostOutcome(ok=False, error=text, permanent=True)


# What a local Slack-compatible sink (the simulator's, the tests') gets when no token is set: not a secret, just
# enough for a server that, like Slack, answers not_authed to a request without one.
LOCAL_SINK_TOKEN = "xoxb-local-sink"


def make_poster(token: str | None, base_url: str, channel: str) -> SlackPoster | None:
    """A poster, or None when there is nowhere to deliver: no token for the real Slack. Alerts then stay pending
    (recorded and visible in gold.alerts). A Slack-compatible sink at another URL needs no real token."""
    if not token:
        if base_url.rstrip("/") == SLACK_DEFAULT_API_URL.rstrip("/"):
            return None
        token = LOCAL_SINK_TOKEN
    return SlackPoster(token, base_url, channel)
