"""TF: ``TransformStamped`` / ``TFMessage`` / ``Odometry`` <-> 4x4 transforms, and a small buffer.

ROS quaternions are ``[x, y, z, w]``; mv4d uses ``[w, x, y, z]`` internally, converted here.
A ``TransformStamped`` with ``header.frame_id = parent`` and ``child_frame_id = child`` is
``T_parent_child`` (maps child-frame points into the parent frame).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mv4d_core.geometry.transforms import (invert_transform, make_transform, quat_to_rotmat, quat_wxyz_to_xyzw,
                                           quat_xyzw_to_wxyz, rotmat_to_quat)
from mv4d_core.msgs.errors import TransformError
from mv4d_core.msgs.factory import MsgFactory, default_factory
from mv4d_core.msgs.stamps import stamp_to_ns


@dataclass(frozen=True)
class StampedTransform:
    """``T_parent_child`` (4, 4) at ``stamp_ns``."""

    parent: str
    child: str
    stamp_ns: int
    T: np.ndarray


def _pose_to_matrix(t_xyz, q_xyzw, where: str) -> np.ndarray:
    t = np.array([float(t_xyz.x), float(t_xyz.y), float(t_xyz.z)])
    q = np.array([float(q_xyzw.x), float(q_xyzw.y), float(q_xyzw.z), float(q_xyzw.w)])
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise TransformError(f"{where}: non-finite translation/rotation {t.tolist()} {q.tolist()}")
    n = np.linalg.norm(q)
    if n < 1e-9:
        raise TransformError(f"{where}: zero-length quaternion")
    return make_transform(quat_to_rotmat(quat_xyzw_to_wxyz(q / n)), t)


def transform_to_matrix(msg) -> np.ndarray:
    """``TransformStamped`` or ``Transform`` -> ``(4, 4)`` ``T_parent_child``."""
    tf = msg.transform if hasattr(msg, "transform") else msg
    where = (f"TransformStamped({msg.header.frame_id!r} <- {msg.child_frame_id!r})"
             if hasattr(msg, "child_frame_id") else "Transform")
    return _pose_to_matrix(tf.translation, tf.rotation, where)


def transform_stamped_to_stamped(msg) -> StampedTransform:
    return StampedTransform(str(msg.header.frame_id), str(msg.child_frame_id), stamp_to_ns(msg.header.stamp),
                            transform_to_matrix(msg))


def matrix_to_transform_stamped(T_parent_child: np.ndarray, parent: str, child: str, stamp_ns: int = 0, *,
                                factory: MsgFactory | None = None):
    """``(4, 4)`` -> ``TransformStamped`` (``header.frame_id = parent``, ``child_frame_id = child``)."""
    factory = factory or default_factory()
    T = np.asarray(T_parent_child, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise TransformError(f"transform {parent!r} <- {child!r}: expected a finite (4, 4) matrix, got {T.shape}")
    q_xyzw = quat_wxyz_to_xyzw(rotmat_to_quat(T[:3, :3]))
    return factory.transform_stamped(factory.header(stamp_ns, parent), child, T[:3, 3], q_xyzw)


def tf_message_to_list(msg) -> list[StampedTransform]:
    """``TFMessage`` -> list of :class:`StampedTransform`."""
    return [transform_stamped_to_stamped(t) for t in msg.transforms]


def make_tf_message(transforms: Iterable[StampedTransform], *, factory: MsgFactory | None = None):
    factory = factory or default_factory()
    return factory.tf_message([matrix_to_transform_stamped(t.T, t.parent, t.child, t.stamp_ns, factory=factory)
                               for t in transforms])


def odometry_to_matrix(msg) -> StampedTransform:
    """``nav_msgs/Odometry`` -> ``T_world_base`` as ``StampedTransform(header.frame_id, child_frame_id, ...)``."""
    where = f"Odometry({msg.header.frame_id!r} <- {msg.child_frame_id!r})"
    T = _pose_to_matrix(msg.pose.pose.position, msg.pose.pose.orientation, where)
    return StampedTransform(str(msg.header.frame_id), str(msg.child_frame_id), stamp_to_ns(msg.header.stamp), T)


def matrix_to_odometry(T_world_base: np.ndarray, world_frame: str, base_frame: str, stamp_ns: int = 0, *,
                       factory: MsgFactory | None = None):
    factory = factory or default_factory()
    T = np.asarray(T_world_base, dtype=np.float64)
    q_xyzw = quat_wxyz_to_xyzw(rotmat_to_quat(T[:3, :3]))
    return factory.odometry(factory.header(stamp_ns, world_frame), base_frame, T[:3, 3], q_xyzw)


# ----------------------------------------------------------------------------- interpolation
def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (wxyz), shortest arc."""
    d = float(np.dot(q0, q1))
    if d < 0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(d, 1.0))
    s = np.sin(theta)
    return (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / s


def interpolate_transform(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """Rigid interpolation: slerp rotation, lerp translation; ``a`` in [0, 1]."""
    q = _slerp(rotmat_to_quat(T0[:3, :3]), rotmat_to_quat(T1[:3, :3]), a)
    return make_transform(quat_to_rotmat(q), (1 - a) * T0[:3, 3] + a * T1[:3, 3])


class _Edge:
    """Time series of one ``parent <- child`` transform (sorted by stamp; equal stamp overwrites)."""

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.stamps: list[int] = []
        self.mats: list[np.ndarray] = []
        self.static: np.ndarray | None = None

    def add(self, stamp_ns: int, T: np.ndarray) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.mats[i] = T
        else:
            self.stamps.insert(i, stamp_ns)
            self.mats.insert(i, T)

    def at(self, stamp_ns: int | None, tolerance_ns: int, child: str) -> np.ndarray:
        if self.static is not None:
            return self.static
        if stamp_ns is None:
            return self.mats[-1]
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            return self.mats[i]
        if 0 < i < len(self.stamps):
            t0, t1 = self.stamps[i - 1], self.stamps[i]
            return interpolate_transform(self.mats[i - 1], self.mats[i], (stamp_ns - t0) / (t1 - t0))
        j = 0 if i == 0 else len(self.stamps) - 1
        if abs(self.stamps[j] - stamp_ns) <= tolerance_ns:
            return self.mats[j]
        raise TransformError(
            f"transform {self.parent!r} <- {child!r}: stamp {stamp_ns} ns is outside the buffered range "
            f"[{self.stamps[0]}, {self.stamps[-1]}] ns (extrapolation tolerance {tolerance_ns} ns)")


class TFBuffer:
    """Static + dynamic transforms forming a tree; :meth:`lookup` chains them.

    Dynamic edges are interpolated between the bracketing samples (slerp/lerp) and may be used
    outside their range only within ``extrapolation_tolerance_ns``. A frame has one parent; a
    transform naming a different parent for an existing child raises.
    """

    def __init__(self, extrapolation_tolerance_ns: int = 0) -> None:
        self.tolerance_ns = int(extrapolation_tolerance_ns)
        self._edges: dict[str, _Edge] = {}  # child -> edge to its parent

    def _edge(self, parent: str, child: str) -> _Edge:
        if parent == child:
            raise TransformError(f"transform {parent!r} <- {child!r}: a frame cannot be its own parent")
        e = self._edges.get(child)
        if e is None:
            e = self._edges[child] = _Edge(parent)
        elif e.parent != parent:
            raise TransformError(f"frame {child!r} already has parent {e.parent!r}; got another parent {parent!r}")
        return e

    def set_static(self, parent: str, child: str, T_parent_child: np.ndarray) -> None:
        self._edge(parent, child).static = np.asarray(T_parent_child, dtype=np.float64)

    def set_transform(self, parent: str, child: str, stamp_ns: int, T_parent_child: np.ndarray) -> None:
        self._edge(parent, child).add(int(stamp_ns), np.asarray(T_parent_child, dtype=np.float64))

    def add_tf_message(self, msg, static: bool = False) -> int:
        """Add every transform of a ``TFMessage``; returns how many."""
        items = tf_message_to_list(msg)
        for t in items:
            if static:
                self.set_static(t.parent, t.child, t.T)
            else:
                self.set_transform(t.parent, t.child, t.stamp_ns, t.T)
        return len(items)

    @property
    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
            if len(chain) > len(self._edges) + 1:
                raise TransformError(f"TF cycle through frame {frame!r}")
        return chain

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TransformError:
            return False

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """``T_target_source`` (4, 4) at ``stamp_ns`` (``None`` = latest of every dynamic edge)."""
        if target == source:
            return np.eye(4)
        up_src, up_tgt = self._chain(source), self._chain(target)
        common = next((f for f in up_src if f in set(up_tgt)), None)
        if common is None:
            known = sorted(self.frames)
            raise TransformError(f"no TF path from {source!r} to {target!r} (known frames: {known})")
        T_common_src = np.eye(4)
        for f in up_src[:up_src.index(common)]:
            T_common_src = self._edges[f].at(stamp_ns, self.tolerance_ns, f) @ T_common_src
        T_common_tgt = np.eye(4)
        for f in up_tgt[:up_tgt.index(common)]:
            T_common_tgt = self._edges[f].at(stamp_ns, self.tolerance_ns, f) @ T_common_tgt
        return invert_transform(T_common_tgt) @ T_common_src
