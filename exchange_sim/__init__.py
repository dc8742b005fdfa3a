"""Offline exchange simulator: Upbit and Binance REST + WebSocket, alternative.me Fear & Greed and a Slack sink.

Run it: ``python -m exchange_sim --port 8765 --seed 42`` (or ``cryptoflow sim``); ``--help`` lists every flag, defaults
come from the CRYPTOFLOW_SIM_* settings. In tests: ``exchange_sim.testing.running_sim(**flags)`` (a subprocess on a free
port) or the ``sim`` / ``sim_session`` fixtures; ``handle.env()`` points the platform at it.

Routes on one port: Upbit ``/v1/...`` and ``/websocket/v1``; Binance ``/api/v3/...``, ``/ws/<stream>``, ``/stream``;
``/fng/``; Slack ``/api/chat.postMessage``; control under ``/_sim/``: ``trades`` (ground truth), ``shock``, ``faults``,
``reset``, ``status``, ``slack``. Design and figures: docs/decisions/0001-simulator-model.md and
0018-simulator-memory-and-pace.md; settings and endpoints: docs/simulator.md.
"""
