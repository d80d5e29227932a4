"""Polling for the DDS test scripts (they import it by name: :mod:`netns` puts ``test/`` on their path)."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(cond: Callable[[], object], timeout_s: float = 30.0, period_s: float = 0.02) -> bool:
    """Poll ``cond`` every ``period_s`` until it is true or ``timeout_s`` has passed; whether it is."""
    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        time.sleep(period_s)
    return bool(cond())
