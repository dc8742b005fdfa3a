"""uvicorn's sans-io WebSocket protocol plus one ASGI extension: many frames written with one transport write.

ASGI sends one message per ``websocket.send``, and uvicorn writes each to the socket at once: a syscall per message,
which caps the firehose well below the sidecar's 50,000 msg/s target. With the ``cryptoflow.websocket.send_batch``
extension in the scope, a stream can hand over a list of frames; the protocol frames them all and writes once.
Apps check for the extension and fall back to plain ``websocket.send`` under any other server.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

BATCH = "cryptoflow.websocket.send_batch"


class BatchingWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # absent when the handshake was refused
            scope["extensions"][BATCH] = {}

    async def send(self, message: Any) -> None:
        if message["type"] != BATCH:
            await super().send(message)
            return
        await self.writable.wait()  # respect the transport's flow control, as a single send does
        if self.disconnected:
            raise ClientDisconnected()
        if not self.handshake_complete or self.close_sent or self.initial_response is not None:
            raise RuntimeError("a frame batch can only be sent on an open WebSocket")
        try:
            if message.get("binary"):
                for frame in message["frames"]:
                    self.conn.send_binary(frame)
            else:
                for frame in message["frames"]:
                    self.conn.send_text(frame)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(self.conn.data_to_send()))
