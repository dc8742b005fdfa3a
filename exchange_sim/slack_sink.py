"""A Slack-compatible sink: ``POST /api/chat.postMessage`` answers like Slack and keeps the message for the demo page."""

from __future__ import annotations

import html
import json
import time
import zlib
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from exchange_sim.state import Sim


def channel_id(name: str) -> str:
    """Slack answers with channel ids, not names: a stable fake id per name."""
    if name and name[0] in "CDG" and name[1:].isalnum() and name.upper() == name:
        return name
    return "C" + format(zlib.crc32(name.lstrip("#").encode()), "08X")


async def _params(request: Request) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        body = await request.body()
        data = json.loads(body or b"{}")
        return data if isinstance(data, dict) else {}
    # urlencoded by hand: Starlette's form parser needs python-multipart, which nothing else here needs
    out = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    for key in ("blocks", "attachments"):
        if isinstance(out.get(key), str):
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                pass
    return out


def routes(sim: Sim) -> list[Route]:
    async def post_message(request: Request) -> Response:
        status = sim.faults.slack_status
        if status == 429:
            return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": "1"})
        if status == 500:
            return JSONResponse({"ok": False, "error": "internal_error"}, status_code=500)
        try:
            params = await _params(request)
        except ValueError:
            return JSONResponse({"ok": False, "error": "invalid_json"})
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() or params.get("token", "")
        if not token:
            return JSONResponse({"ok": False, "error": "not_authed"})
        channel = str(params.get("channel") or "")
        if not channel:
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        text = params.get("text") or ""
        if not text and not params.get("blocks") and not params.get("attachments"):
            return JSONResponse({"ok": False, "error": "no_text"})
        ts = f"{time.time():.6f}"
        message = {"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "bot_id": "BSIM0001",
                   "username": params.get("username") or "cryptoflow"}
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        if params.get("attachments"):
            message["attachments"] = params["attachments"]
        if params.get("metadata"):  # Slack keeps message metadata (event_type, event_payload) with the message
            message["metadata"] = params["metadata"]
        cid = channel_id(channel)
        sim.slack_messages.append({"channel": cid, "channel_name": channel, **message})
        return JSONResponse({"ok": True, "channel": cid, "ts": ts, "message": message})

    async def auth_test(request: Request) -> Response:
        if not request.headers.get("authorization", "").removeprefix("Bearer ").strip():
            return JSONResponse({"ok": False, "error": "not_authed"})
        return JSONResponse({"ok": True, "url": "http://127.0.0.1/", "team": "CryptoFlow Sim", "user": "cryptoflow",
                             "team_id": "TSIM0001", "user_id": "USIM0001", "bot_id": "BSIM0001"})

    async def list_messages(request: Request) -> Response:
        return JSONResponse({"messages": sim.slack_messages})

    async def clear(request: Request) -> Response:
        sim.slack_messages.clear()
        return JSONResponse({"ok": True})

    async def page(request: Request) -> Response:
        items = "".join(
            f"<li><span class=ts>{html.escape(m['ts'])}</span> <b>{html.escape(m['channel_name'])}</b> "
            f"<pre>{html.escape(m['text'])}</pre></li>"
            for m in reversed(sim.slack_messages)
        )
        body = (
            "<!doctype html><html><head><meta charset=utf-8><title>CryptoFlow alerts (Slack sink)</title>"
            "<meta http-equiv=refresh content=5><style>body{font-family:sans-serif;margin:2em}li{margin:.6em 0}"
            "pre{white-space:pre-wrap;margin:.2em 0}.ts{color:#888}</style></head><body>"
            f"<h1>Slack sink</h1><p>{len(sim.slack_messages)} message(s)</p><ul>{items}</ul></body></html>"
        )
        return HTMLResponse(body)

    return [
        Route("/api/chat.postMessage", post_message, methods=["POST"]),
        Route("/api/auth.test", auth_test, methods=["GET", "POST"]),
        Route("/_sim/slack/messages", list_messages),
        Route("/_sim/slack/clear", clear, methods=["POST"]),
        Route("/_sim/slack", page),
    ]
