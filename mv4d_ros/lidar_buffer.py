"""The recent LiDAR clouds, for attaching one to each synchronized camera set.

The cameras alone form a set (their ApproximateTime synchronizer); the cloud nearest to the set's
stamp within the sync slop joins it. A set without one (the LiDAR stopped, dropped a sweep, or its
stamps drifted beyond the slop) is processed camera-only instead of never completing. Thread-safe:
the executor adds, the worker matches.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class LidarBuffer:
    """The newest ``size`` clouds as ``(stamp_ns, message)``, oldest first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._items: deque[tuple[int, Any]] = deque(maxlen=size)
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def add(self, stamp_ns: int, msg: Any) -> None:
        with self._cond:
            self._items.append((int(stamp_ns), msg))
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._items.clear()

    @property
    def newest_ns(self) -> int | None:
        with self._cond:
            return self._items[-1][0] if self._items else None

    def match(self, stamp_ns: int, slop_s: float, wait_s: float = 0.0) -> tuple[int, Any] | None:
        """The cloud nearest to ``stamp_ns`` within ``slop_s``, or None. While no cloud at or after
        ``stamp_ns`` has arrived (a nearer one may still be on its way) wait up to ``wait_s``."""
        slop_ns = int(round(slop_s * 1e9))
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) and self._items[-1][0] >= stamp_ns, max(0.0, wait_s))
            best = min(self._items, key=lambda it: abs(it[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > slop_ns:
            return None
        return best
