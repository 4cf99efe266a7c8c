"""Server shutdown for one live session: finish the reply in flight, or cut it cleanly.

Shared by every transport's ``drain`` (v1 WebSocket, Twilio, Realtime, WebRTC). A reply
still running at the deadline is cut like a barge-in (``Session.interrupt``): the
client gets ``interrupted``, ``tts_complete`` (interrupted) and ``stream_end``, and the
turn is stored as far as it was heard. Then the transport closes the connection.
"""

from __future__ import annotations

import asyncio

from .outbox import Outbox
from .session import Session

POLL_S = 0.05
FLUSH_S = 1.0  # at most this long for the cut reply's last events to reach the writer


async def finish_reply(session: Session | None, outbox: Outbox, deadline: float) -> bool:
    """Wait (until the loop time ``deadline``) for the live reply; cut it if it is still
    going; let the writer take the events. Whether a reply was cut."""
    loop = asyncio.get_running_loop()
    while session is not None and _busy(session) and loop.time() < deadline:
        await asyncio.sleep(POLL_S)
    if session is None or not session.replying:
        return False
    session.log.info("reply_cut_by_shutdown")
    session.interrupt()
    flushed = loop.time() + FLUSH_S
    while len(outbox) and not outbox.closed and loop.time() < flushed:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.01)  # the writer's send of the last batch
    return True


def _busy(session: Session) -> bool:
    """A reply is playing, or a user turn waits for the LLM stage (its reply is next).
    (A final transcription still decoding is not seen: that turn may be lost.)"""
    return session.replying or not session.llm_q.empty()
