"""Graceful shutdown: uvicorn's Server, draining. The first SIGTERM/SIGINT stops admitting
(new requests get 503 `draining`) and finishes the accepted ones, for at most
drain_timeout_s; then the server stops listening and gives the connections it already accepted
a moment to deliver their request (answered 503 `draining` too) before it closes them and exits
0. A second signal exits at once with status 1.

uvicorn's own shutdown closes every connection not inside a request at once: one whose client
has connected and is still sending its headers loses a request the client believes it sent.
"""

from __future__ import annotations

import os
import time
from types import FrameType

import uvicorn

from .state import ServiceState

# How long, at the end of a drain, a connection that was accepted but has not yet sent a whole
# request's headers may take to send them. Bounded by the drain timeout as well.
CONNECTION_GRACE_S = 2.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServiceState) -> None:
        super().__init__(config)
        self.state = state
        self.drain_requested = False
        self.stopped_listening_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler must not take locks (metrics, logging): it may have interrupted
        # their holder on this very thread. Set a flag; on_tick does the work.
        if self.drain_requested:
            os._exit(1)
        self.drain_requested = True

    async def on_tick(self, counter: int) -> bool:
        state = self.state
        if self.drain_requested and not state.draining:
            state.begin_drain()
        if not self.should_exit and state.drained():
            if state.in_flight:  # the drain timed out: answer the rest 503 now
                state.abandon_in_flight()
                self.should_exit = True
            else:
                self.should_exit = self._connections_settled()
        return await super().on_tick(counter)

    def _connections_settled(self) -> bool:
        """Stop listening; then True once no accepted connection is still sending a request's
        headers (`awaiting_request`), after CONNECTION_GRACE_S, or at the drain timeout."""
        now = time.monotonic()
        if self.stopped_listening_at is None:
            self.stopped_listening_at = now
            for server in self.servers:
                server.close()
        give_up = min(
            self.stopped_listening_at + CONNECTION_GRACE_S,
            self.state.drain_started + self.state.settings.drain_timeout_s,
        )
        waiting = any(getattr(c, "awaiting_request", False) for c in self.server_state.connections)
        return not waiting or now >= give_up
