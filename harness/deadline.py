"""Deadlines on the monotonic clock: every wait in the harness is bounded by one."""

from __future__ import annotations

import time
from typing import Optional


class Deadline:
    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = None if seconds is None else self.started + seconds

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def remaining(self) -> float:
        if self.at is None:
            return float("inf")
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at
