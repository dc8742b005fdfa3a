"""The API's keys and limits on a real `cryptoflow serve` process: a key is required once keys are configured (header
or Bearer; WebSocket: header or first message), wrong keys are refused, the per-key rate limit answers 429 with
Retry-After, keys appear in no log line, and the server refuses to listen beyond loopback without keys."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from cryptoflow_core.settings import load_settings
from cryptoflow_dagster import lake
from cryptoflow_serving.auth import is_loopback
from cryptoflow_serving.server import RefusedToStart, check_exposure
from cryptoflow_serving.testing import running_api


@pytest.fixture
def lake_home(settings):
    with lake.session(settings) as con:
        lake.ensure_schema(con)
    return settings.home


def test_keys_are_required_checked_and_never_logged(lake_home):
    key, other = f"cf-CANARY-{secrets.token_hex(12)}", f"cf-CANARY-{secrets.token_hex(12)}"
    env = {"CRYPTOFLOW_HOME": str(lake_home), "CRYPTOFLOW_API_KEYS": f"{key},{other}",
           "CRYPTOFLOW_API_RATE_LIMIT": "0"}
    with running_api(env) as api, httpx.Client(base_url=api.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200  # liveness and docs need no key
        assert c.get("/openapi.json").status_code == 200
        missing = c.get("/v1/bars/1m")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        assert "X-API-Key" in missing.json()["message"]
        assert c.get("/v1/bars/1m", headers={"X-API-Key": key[:-1] + "x"}).status_code == 401
        assert c.get("/v1/bars/1m", headers={"Authorization": "Basic " + key}).status_code == 401
        assert c.get("/v1/bars/1m", headers={"X-API-Key": key}).status_code == 200
        assert c.get("/v1/bars/1m", headers={"Authorization": f"Bearer {other}"}).status_code == 200

        # WebSocket: the key in a header, or in the first message for clients that cannot set headers (browsers)
        with connect(api.ws_url, additional_headers={"X-API-Key": key}) as ws:
            ws.send(json.dumps({"subscribe": {"markets": ["*"], "channels": ["alerts"]}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        with connect(api.ws_url) as ws:
            ws.send(json.dumps({"api_key": other, "subscribe": {"markets": ["*"], "channels": ["alerts"]}}))
            assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        with connect(api.ws_url) as ws:
            ws.send(json.dumps({"api_key": "nope", "subscribe": {"markets": ["*"], "channels": ["alerts"]}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 4001 and "API key" in closed.value.rcvd.reason
    log = api.output()
    assert '"GET /v1/bars/1m HTTP/1.1" 200' in log  # the access log was on: there was something to leak into
    assert key not in log and other not in log


def test_the_rate_limit_answers_429_with_retry_after_per_key(lake_home):
    keys = [f"k-{secrets.token_hex(8)}" for _ in range(2)]
    env = {"CRYPTOFLOW_HOME": str(lake_home), "CRYPTOFLOW_API_KEYS": ",".join(keys), "CRYPTOFLOW_API_RATE_LIMIT": "1"}
    with running_api(env) as api, httpx.Client(base_url=api.url, timeout=30) as c:
        # 1 per second, a burst of 1: a quick run of 6 meets 429s; the other key's bucket is its own
        answers = [c.get("/v1/markets", headers={"X-API-Key": keys[0]}) for _ in range(6)]
        limited = [r for r in answers if r.status_code == 429]
        assert answers[0].status_code == 200 and len(limited) >= 3
        assert all(r.headers["retry-after"] == "1" and r.json()["error"] == "rate_limited" for r in limited)
        assert c.get("/v1/markets", headers={"X-API-Key": keys[1]}).status_code == 200
        assert c.get("/healthz").status_code == 200  # outside /v1: never limited


def test_keys_stay_out_of_the_settings_repr():
    settings = load_settings({"CRYPTOFLOW_API_KEYS": "k-SECRET-1,k-SECRET-2"})
    assert settings.api_keys == ("k-SECRET-1", "k-SECRET-2")
    assert "SECRET" not in repr(settings) and "SECRET" not in str(settings)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                            ("example.com", False)])
def test_beyond_loopback_keys_are_required(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        check_exposure(host, ())
    else:
        with pytest.raises(RefusedToStart, match="CRYPTOFLOW_API_KEYS"):
            check_exposure(host, ())
        check_exposure(host, ("a-key",))


def test_serve_refuses_to_start_on_all_interfaces_without_keys(lake_home):
    env = {"CRYPTOFLOW_HOME": str(lake_home), "CRYPTOFLOW_API_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "cryptoflow_dagster.cli", "serve"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2 and "refusing to serve on 0.0.0.0" in out.stderr and "CRYPTOFLOW_API_KEYS" in out.stderr
