"""Circuit breaker per provider. Pure: the caller passes the clock.

closed → (``threshold`` consecutive failures) → open: calls are skipped for
``cooldown_s`` → half-open: one probe call is let through; success closes the circuit,
failure opens it again for another cooldown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Breaker:
    threshold: int = 3
    cooldown_s: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_error: str = ""
    total_failures: int = 0
    total_calls: int = 0

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        if now - self.opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def allow(self, now: float) -> bool:
        """May a call go to this provider now? (In half-open, only one probe at a time.)"""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.total_calls += 1
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self, now: float, error: str) -> None:
        self.total_calls += 1
        self.total_failures += 1
        self.failures += 1
        self.last_error = error
        if self.probing or self.failures >= self.threshold:
            self.opened_at = now
        self.probing = False

    def describe(self, now: float) -> str:
        # Shown by /api/health to anyone: the error's text (an upstream's URL, its
        # traceback) stays in the log (failover's provider_failed line).
        state = self.state(now)
        if state == "closed":
            return "ok" if not self.failures else f"ok ({self.failures} recent failures)"
        return f"error: circuit {state} after {self.failures} failures"
