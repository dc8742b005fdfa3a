"""The ``slack`` resource: where alerts go. The token reaches it only through ``dg.EnvVar("SLACK_BOT_TOKEN")``."""

import os

import dagster as dg

from cryptoflow_dagster.alerting.slack import SlackPoster, make_poster
from cryptoflow_core.settings import load_settings


class SlackAlertsResource(dg.ConfigurableResource):
    """Empty fields fall back to the settings (CRYPTOFLOW_SLACK_API_URL, _SLACK_CHANNEL, _UI_URL) at run time."""

    token: str | None = None
    api_url: str = ""
    channel: str = ""
    ui_url: str = ""

    def poster(self) -> SlackPoster | None:
        s = load_settings()
        return make_poster(self.token, self.api_url or s.slack_api_url, self.channel or s.slack_channel)

    def base_ui_url(self) -> str:
        return self.ui_url or load_settings().ui_url


def slack_resource() -> SlackAlertsResource:
    # dg.EnvVar fails resource setup when the variable is unset; no token is a supported mode (alerts are recorded and
    # stay pending, or go to a token-less local sink), so the EnvVar is only wired in when the variable exists.
    token = dg.EnvVar("SLACK_BOT_TOKEN") if os.environ.get("SLACK_BOT_TOKEN") else None
    return SlackAlertsResource(token=token)
