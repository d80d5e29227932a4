"""The one rule for stamps that go back in time, used per input topic by the node and per frame by
the pipeline.

A stamp older than the newest one seen by at most ``max_clock_jump_s`` is *late* (a message delayed
in transport, a set that completed out of order): it is dropped and counted, nothing is reset. A
jump back by more is a new timeline (a bag looping, a restarted simulation clock): synchronizer and
temporal state are reset and the stamp is accepted. A stamp equal to the newest is late too (a
duplicate).
"""

from __future__ import annotations

OK = "ok"
LATE = "late"
CLOCK_JUMP_BACK = "clock_jump_back"


def classify_stamp(newest_ns: int | None, stamp_ns: int, max_clock_jump_s: float) -> str:
    """:data:`OK`, :data:`LATE` or :data:`CLOCK_JUMP_BACK` for ``stamp_ns`` after ``newest_ns`` (None: first)."""
    if newest_ns is None or stamp_ns > newest_ns:
        return OK
    if (newest_ns - stamp_ns) * 1e-9 > max_clock_jump_s:
        return CLOCK_JUMP_BACK
    return LATE
