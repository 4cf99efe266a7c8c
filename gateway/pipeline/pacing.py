"""Real-time pacing of reply audio. Pure: the caller passes the clock.

Model of the listener: playback starts when the first chunk arrives and runs
continuously while audio is buffered; if the buffer runs dry (an underrun), it
restarts with the next chunk. The server may run at most ``lead_ms`` ahead of that
playback, so a barge-in stops the audio at once and ``played_ms`` is what the
listener really heard.
"""

from __future__ import annotations


class Pacer:
    def __init__(self, lead_ms: float) -> None:
        self.lead_ms = lead_ms
        self.sent_ms = 0.0
        self._play_end: float | None = None  # clock (ms) when buffered audio runs out
        self.underruns = 0

    def delay_ms(self, now_ms: float) -> float:
        """How long to wait before the next chunk may be sent."""
        if self._play_end is None:
            return 0.0
        return max(0.0, self._play_end - now_ms - self.lead_ms)

    def sent(self, chunk_ms: float, now_ms: float) -> None:
        if self._play_end is None or self._play_end < now_ms:
            if self._play_end is not None:
                self.underruns += 1
            self._play_end = now_ms
        self._play_end += chunk_ms
        self.sent_ms += chunk_ms

    def buffered_ms(self, now_ms: float) -> float:
        if self._play_end is None:
            return 0.0
        return max(0.0, self._play_end - now_ms)

    def played_ms(self, now_ms: float) -> float:
        return max(0.0, self.sent_ms - self.buffered_ms(now_ms))
