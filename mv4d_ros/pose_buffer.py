"""Recent ego poses from ``nav_msgs/Odometry``, looked up at a camera set's stamp (no ROS import).

The node needs ``T_world_base`` at each synchronized set's stamp to warp the previous frame's
volume (temporal fusion). Odometry arrives at its own rate, so the pose is interpolated between
the two samples around the stamp (slerp/lerp, ``mv4d_core.msgs.tf.interpolate_transform``); past the
newest sample it is extrapolated at the velocity of the last two samples (when they are at most
``2 * tolerance_ns`` apart, i.e. dense enough to interpolate between; else the newest is held), and
before the oldest the oldest is held. Each only when a sample lies within ``tolerance_ns`` of the
stamp, so a stale or gappy odometry stream means "no pose", never a guessed one.

Thread-safe: the node adds samples from the odometry callback while its worker thread looks poses
up, and :meth:`wait_for` lets the worker wait (bounded) for the sample that covers a set's stamp.

The buffer is bounded (by age relative to the newest sample and by count) because the node
runs for hours. A stamp older than the newest sample (a looping bag, a restarted clock) or a new
``header.frame_id`` (odometry re-initialised in another world frame) empties it: poses from two
different runs or frames must never be mixed in one relative motion.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import numpy as np

from mv4d_core.msgs.tf import interpolate_transform, odometry_to_matrix


@dataclass(frozen=True)
class PoseLookup:
    """``T_world_base`` (4, 4) at the requested stamp, how far the nearest sample was (ns) and how the
    pose was obtained: ``exact``, ``interpolated``, ``extrapolated`` or ``held`` (an end sample)."""

    T_world_base: np.ndarray
    nearest_ns: int
    how: str = "interpolated"


class PoseBuffer:
    """Time-sorted ``T_world_base`` samples of one world frame.

    ``tolerance_ns``: the nearest sample must be at most this far from a looked-up stamp;
    ``horizon_ns``: samples older than the newest minus this are forgotten;
    ``max_samples``: hard cap on the number kept (oldest go first).
    """

    def __init__(self, tolerance_ns: int, horizon_ns: int = 5_000_000_000, max_samples: int = 2000) -> None:
        if tolerance_ns <= 0:
            raise ValueError(f"tolerance_ns must be > 0, got {tolerance_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self.horizon_ns = int(horizon_ns)
        self.max_samples = int(max_samples)
        self.world_frame: str | None = None
        self.clears = 0
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []
        self._cv = threading.Condition()

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_ns(self) -> int | None:
        with self._cv:
            return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        with self._cv:
            if self._stamps:
                self.clears += 1
            self._stamps.clear()
            self._poses.clear()

    def wait_for(self, stamp_ns: int, timeout_s: float) -> bool:
        """Block until a sample at or after ``stamp_ns`` is buffered, at most ``timeout_s``; True when one is."""
        with self._cv:
            return self._cv.wait_for(lambda: bool(self._stamps) and self._stamps[-1] >= stamp_ns, max(0.0, timeout_s))

    def add(self, stamp_ns: int, T_world_base: np.ndarray, world_frame: str = "") -> None:
        """Add one pose; out-of-order stamps or another world frame restart the buffer first."""
        with self._cv:
            self._add(int(stamp_ns), T_world_base, world_frame)
            self._cv.notify_all()

    def _add(self, stamp_ns: int, T_world_base: np.ndarray, world_frame: str) -> None:
        if world_frame != self.world_frame or (self._stamps and stamp_ns < self._stamps[-1]):
            if self._stamps:
                self.clears += 1
            self._stamps.clear()
            self._poses.clear()
            self.world_frame = world_frame
        T = np.asarray(T_world_base, dtype=np.float64)
        if self._stamps and stamp_ns == self._stamps[-1]:
            self._poses[-1] = T
        else:
            self._stamps.append(stamp_ns)
            self._poses.append(T)
        # Forget by age, then by count (both from the old end; the list is sorted).
        cut = bisect.bisect_left(self._stamps, stamp_ns - self.horizon_ns)
        cut = max(cut, len(self._stamps) - self.max_samples)
        if cut > 0:
            del self._stamps[:cut]
            del self._poses[:cut]

    def add_odometry(self, msg) -> None:
        """Add a ``nav_msgs/Odometry`` (rclpy or rosbags); raises ``TransformError`` for a non-finite pose."""
        st = odometry_to_matrix(msg)
        self.add(st.stamp_ns, st.T, st.parent)

    def lookup(self, stamp_ns: int) -> PoseLookup | None:
        """``T_world_base`` at ``stamp_ns``, or None when no sample is within ``tolerance_ns``."""
        with self._cv:
            return self._lookup(int(stamp_ns))

    def _lookup(self, stamp_ns: int) -> PoseLookup | None:
        st = self._stamps
        if not st:
            return None
        i = bisect.bisect_left(st, stamp_ns)
        near = [j for j in (i - 1, i) if 0 <= j < len(st)]
        nearest_ns = min(abs(st[j] - stamp_ns) for j in near)
        if nearest_ns > self.tolerance_ns:
            return None
        if i < len(st) and st[i] == stamp_ns:
            return PoseLookup(self._poses[i], 0, "exact")
        if 0 < i < len(st):
            t0, t1 = st[i - 1], st[i]
            T = interpolate_transform(self._poses[i - 1], self._poses[i], (stamp_ns - t0) / (t1 - t0))
            return PoseLookup(T, nearest_ns, "interpolated")
        if i == len(st) and len(st) >= 2 and st[-1] - st[-2] <= 2 * self.tolerance_ns:
            # Past the newest sample: constant velocity of the last two (a = 1 + overshoot / spacing).
            t0, t1 = st[-2], st[-1]
            T = interpolate_transform(self._poses[-2], self._poses[-1], (stamp_ns - t0) / (t1 - t0))
            return PoseLookup(T, nearest_ns, "extrapolated")
        # Just outside the buffered range: hold the end sample (within tolerance, checked above).
        return PoseLookup(self._poses[near[0]], nearest_ns, "held")
