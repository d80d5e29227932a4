"""Counting and throttled logging of bad input (no ROS import, unit-testable).

The node must keep running on bad input (wrong encoding, NaN clouds, missing cameras, a bag that
loops) while telling the operator once per cause, not once per message: the first occurrence of
each cause is logged at once, later ones at most once per ``throttle_s`` with the count since.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class _Cause:
    count: int = 0
    unreported: int = 0
    last_log_s: float | None = None
    last_detail: str = ""


@dataclass
class InputHealth:
    """``report(cause, detail)`` counts and maybe logs; ``counts`` feeds /diagnostics."""

    log: Callable[[str], None]
    throttle_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    #: Called with ``(cause, n, detail)`` on every report (the node feeds its diagnostics window).
    listener: Callable[[str, int, str], None] | None = None
    _causes: dict[str, _Cause] = field(default_factory=dict)

    def report(self, cause: str, detail: str = "", n: int = 1) -> bool:
        """Count ``n`` occurrences of ``cause``; returns True when this call logged."""
        if self.listener is not None:
            self.listener(cause, n, detail)
        c = self._causes.setdefault(cause, _Cause())
        c.count += n
        c.unreported += n
        c.last_detail = detail
        now = self.clock()
        if c.last_log_s is None or now - c.last_log_s >= self.throttle_s:
            extra = f" ({c.unreported} since last report, {c.count} total)" if c.last_log_s is not None else ""
            self.log(f"[{cause}] {detail}{extra}")
            c.last_log_s = now
            c.unreported = 0
            return True
        return False

    @property
    def counts(self) -> dict[str, int]:
        return {k: v.count for k, v in sorted(self._causes.items())}

    def last_detail(self, cause: str) -> str:
        c = self._causes.get(cause)
        return c.last_detail if c else ""
