"""Pause-then-resume of a reply while speech over it is decided (an assistant's
``interruptions.on_overlap = "pause"``), LiveKit-style.

At the first overlap check (speech over the reply for ``vad.barge_in_min_ms``) playout
stops sending: the listener hears what is already buffered (at most
``audio.pacing_lead_ms``), then silence. Speech that turns out to carry no words (a
cough, "mhm") resumes the reply from the next unsent chunk, as does ``resume_ms``
without a verdict of words; words stop it like any barge-in. The default ("play") keeps
the reply playing meanwhile: measured, a backchannel then costs the listener nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import events as ev
from .session_items import Response


class ReplyPauses:
    """One per session; at most one reply is live, so at most one pause and one timer."""

    def __init__(self, emit: Callable[[ev.Event], None], clock: Callable[[], float]) -> None:
        self.emit = emit
        self.clock = clock  # ms
        self._timer: asyncio.TimerHandle | None = None
        self.turn_id = 0  # the overlapping speech that paused the reply

    def pause(self, r: Response, turn_id: int, resume_ms: int) -> None:
        if r.cancelled or r.paused_at is not None:
            return
        r.paused_at = self.clock()
        r.playing.clear()
        self.turn_id = turn_id
        self.emit(ev.ReplyPaused(r.response_id, turn_id))
        self._timer = asyncio.get_running_loop().call_later(resume_ms / 1000, self.resume, r)

    def resume(self, r: Response) -> None:
        """Play on from where it stopped (the speech had no words, or no verdict came)."""
        if r.paused_at is None:
            return
        paused = self.clock() - r.paused_at
        self.release(r)
        if not r.cancelled:
            self.emit(ev.ReplyResumed(r.response_id, round(paused)))

    def release(self, r: Response) -> None:
        """No longer paused (also when the reply is stopped: its playout must wake)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        r.paused_at = None
        r.playing.set()
