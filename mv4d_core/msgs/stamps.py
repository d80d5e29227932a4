"""``builtin_interfaces/Time`` <-> integer nanoseconds (the stamp unit everywhere in mv4d)."""

from __future__ import annotations

from mv4d_core.msgs.errors import MessageError

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """``Time`` (``sec``, ``nanosec``; rosbags or rclpy) -> int nanoseconds."""
    try:
        sec, nsec = int(stamp.sec), int(stamp.nanosec)
    except AttributeError:
        raise MessageError(f"expected a builtin_interfaces/Time with sec/nanosec, got {type(stamp).__name__}") from None
    if not 0 <= nsec < NS_PER_S:
        raise MessageError(f"Time.nanosec must be in [0, 1e9), got {nsec}")
    return sec * NS_PER_S + nsec


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """int nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (floor division, so negatives work)."""
    sec, nsec = divmod(int(ns), NS_PER_S)
    if not -(2**31) <= sec < 2**31:
        raise MessageError(f"stamp {ns} ns does not fit builtin_interfaces/Time.sec (int32)")
    return sec, nsec


def header_stamp_ns(msg) -> int:
    """``msg.header.stamp`` in nanoseconds; clear error when the message has no header."""
    header = getattr(msg, "header", None)
    if header is None or not hasattr(header, "stamp"):
        raise MessageError(f"{type(msg).__name__} has no header.stamp")
    return stamp_to_ns(header.stamp)
