"""Byte views of message ``data`` fields (numpy from rosbags, array.array from rclpy, bytes, lists)."""

from __future__ import annotations

import numpy as np

from mv4d_core.msgs.errors import MessageError


def as_u8(data, where: str) -> np.ndarray:
    """1-D uint8 view (zero-copy when possible) of a ``uint8[]`` field."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise MessageError(f"{where}: expected uint8 data, got dtype {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        pass
    try:
        return np.asarray(data, dtype=np.uint8).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise MessageError(f"{where}: cannot read {type(data).__name__} as bytes") from None
