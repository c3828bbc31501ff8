"""The faults `FakeOpenAIServer` injects: what one is (`Fault`) and how chaos draws them at random.

A fault is an HTTP error (with `Retry-After` headers if given), a delay before the answer, a
dropped connection, a 200 whose body is not valid JSON, or a stream broken off mid-way (`after`
chunks, then the connection dropped; a request that does not stream has its connection dropped).
The server serves queued faults first, in order, then asks its `Chaos` (when one is set) for a
random one; its handler carries them out.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Fault:
    """One injected fault: an HTTP error, a delay, a dropped connection, a malformed body or a
    broken stream."""

    kind: str  # "status" | "delay" | "drop" | "malformed" | "break"
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    message: str = "injected fault"
    after: int = 0  # a "break": the chunks sent before the connection drops


@dataclasses.dataclass
class Chaos:
    """Random faults: each request gets one with probability `rate`, named in `faults`, from a
    seeded generator (so a run is repeatable). Names: an HTTP status ("429" comes with
    `retry-after-ms: 5`), "drop", "malformed", "delay" (answers after `delay` seconds)."""

    rate: float
    faults: tuple[str, ...]
    delay: float
    rng: random.Random

    def draw(self) -> Fault | None:
        """The fault for the next request, or None when it goes through."""
        if self.rng.random() >= self.rate:
            return None
        name = self.rng.choice(self.faults)
        if name == "delay":
            return Fault("delay", seconds=self.delay)
        if name in ("drop", "malformed"):
            return Fault(name)
        status = int(name)
        return Fault("status", status=status, retry_after_ms=5 if status == 429 else None)
