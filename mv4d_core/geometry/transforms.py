"""SE(3) transforms and unit quaternions, batched, for numpy arrays and torch tensors alike.

Conventions (one source of truth for the whole package):

* A transform ``T_a_b`` is a ``(..., 4, 4)`` homogeneous matrix that maps points expressed in
  frame ``b`` into frame ``a``: ``p_a = T_a_b @ p_b``. So ``T_base_cam`` takes camera points to
  ``base_link`` and ``T_world_base`` is the ego pose.
* Quaternions inside mv4d are ``[w, x, y, z]`` (scalar first, as nuScenes and pyquaternion).
  ROS ``geometry_msgs/Quaternion`` is ``x, y, z, w``: convert at the message boundary only,
  with :func:`quat_xyzw_to_wxyz` / :func:`quat_wxyz_to_xyzw`.
* Quaternions are Hamilton, active rotations; ``q`` and ``-q`` are the same rotation and
  :func:`rotmat_to_quat` returns the one with ``w >= 0``.

Every function accepts leading batch dimensions and keeps the array library of its input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # torch is a hard dependency of the package, but geometry must not require it to import.
    import torch
except ImportError:  # pragma: no cover - exercised only in torch-free installs
    torch = None  # type: ignore[assignment]

Array = Any  # np.ndarray or torch.Tensor


def _is_torch(x: Array) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _stack(xs: list, axis: int, like: Array) -> Array:
    return torch.stack(xs, dim=axis) if _is_torch(like) else np.stack(xs, axis=axis)


def _cat(xs: list, axis: int, like: Array) -> Array:
    return torch.cat(xs, dim=axis) if _is_torch(like) else np.concatenate(xs, axis=axis)


def _swap_last(x: Array) -> Array:
    return x.transpose(-1, -2) if _is_torch(x) else np.swapaxes(x, -1, -2)


def quat_xyzw_to_wxyz(q_xyzw: Array) -> Array:
    """``(..., 4)`` ROS order ``[x, y, z, w]`` -> mv4d order ``[w, x, y, z]``."""
    return _cat([q_xyzw[..., 3:4], q_xyzw[..., 0:3]], -1, q_xyzw)


def quat_wxyz_to_xyzw(q_wxyz: Array) -> Array:
    """``(..., 4)`` mv4d order ``[w, x, y, z]`` -> ROS order ``[x, y, z, w]``."""
    return _cat([q_wxyz[..., 1:4], q_wxyz[..., 0:1]], -1, q_wxyz)


def quat_normalize(q: Array) -> Array:
    """Unit quaternion; raises on a (near) zero quaternion instead of returning NaNs."""
    if _is_torch(q):
        n = torch.linalg.norm(q, dim=-1, keepdim=True)
        if bool((n < 1e-12).any()):
            raise ValueError("zero-length quaternion cannot be normalized")
        return q / n
    q = np.asarray(q, dtype=np.float64 if np.asarray(q).dtype.kind != "f" else np.asarray(q).dtype)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n < 1e-12):
        raise ValueError("zero-length quaternion cannot be normalized")
    return q / n


def quat_to_rotmat(q_wxyz: Array) -> Array:
    """``(..., 4)`` quaternion ``[w, x, y, z]`` (normalized here) -> ``(..., 3, 3)`` rotation."""
    q = quat_normalize(q_wxyz)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        _stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1, q),
        _stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1, q),
        _stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1, q),
    ]
    return _stack(rows, -2, q)


def rotmat_to_quat(R: Array) -> Array:
    """``(..., 3, 3)`` rotation -> ``(..., 4)`` quaternion ``[w, x, y, z]`` with ``w >= 0``.

    Uses the largest-diagonal branch (Shepperd) so it stays accurate near 180 degrees.
    """
    if _is_torch(R):
        return torch.from_numpy(rotmat_to_quat(R.detach().cpu().double().numpy())).to(R)
    R = np.asarray(R, dtype=np.float64)
    batch = R.shape[:-2]
    m = R.reshape(-1, 3, 3)
    q = np.empty((m.shape[0], 4))
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    diag = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    choice = np.where(tr > diag.max(-1), 3, diag.argmax(-1))
    for c in range(4):
        sel = choice == c
        if not np.any(sel):
            continue
        r = m[sel]
        if c == 3:
            s = np.sqrt(1.0 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]) * 2
            q[sel] = np.stack([0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s,
                               (r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 1, 0] - r[:, 0, 1]) / s], -1)
        else:
            i, j, k = c, (c + 1) % 3, (c + 2) % 3
            s = np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, k, k]) * 2
            out = np.empty((r.shape[0], 4))
            out[:, 0] = (r[:, k, j] - r[:, j, k]) / s
            out[:, 1 + i] = 0.25 * s
            out[:, 1 + j] = (r[:, j, i] + r[:, i, j]) / s
            out[:, 1 + k] = (r[:, k, i] + r[:, i, k]) / s
            q[sel] = out
    q[q[:, 0] < 0] *= -1
    return q.reshape(*batch, 4)


def make_transform(R: Array, t: Array) -> Array:
    """Rotation ``(..., 3, 3)`` and translation ``(..., 3)`` -> ``(..., 4, 4)`` transform."""
    top = _cat([R, t[..., :, None]], -1, R)
    if _is_torch(R):
        bottom = torch.zeros(*R.shape[:-2], 1, 4, dtype=R.dtype, device=R.device)
    else:
        bottom = np.zeros((*R.shape[:-2], 1, 4), dtype=np.result_type(R, t))
    bottom[..., 0, 3] = 1
    return _cat([top, bottom], -2, R)


def transform_from_quat(q_wxyz: Array, t: Array) -> Array:
    """Quaternion ``[w, x, y, z]`` ``(..., 4)`` + translation ``(..., 3)`` -> ``(..., 4, 4)``."""
    return make_transform(quat_to_rotmat(q_wxyz), t)


def transform_to_quat(T: Array) -> tuple[Array, Array]:
    """``(..., 4, 4)`` -> (quaternion ``[w, x, y, z]`` ``(..., 4)``, translation ``(..., 3)``)."""
    return rotmat_to_quat(T[..., :3, :3]), T[..., :3, 3]


def invert_transform(T: Array) -> Array:
    """Exact rigid inverse ``(..., 4, 4)`` (uses R^T, never a general matrix inverse)."""
    R_inv = _swap_last(T[..., :3, :3])
    t_inv = -(R_inv @ T[..., :3, 3:4])[..., 0]
    return make_transform(R_inv, t_inv)


def transform_points(T: Array, points: Array) -> Array:
    """Apply ``(..., 4, 4)`` to points ``(..., N, 3)`` -> ``(..., N, 3)``."""
    R = T[..., :3, :3]
    t = T[..., None, :3, 3]
    return points @ _swap_last(R) + t


def rotation_angle(R: Array) -> Array:
    """Rotation angle in radians of ``(..., 3, 3)`` rotations (for tests and diagnostics)."""
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    c = (tr - 1) / 2
    if _is_torch(R):
        return torch.arccos(torch.clamp(c, -1.0, 1.0))
    return np.arccos(np.clip(c, -1.0, 1.0))


def yaw_transform(yaw_rad: float, t_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Planar pose helper: rotation about +z (REP 103 up) followed by a translation."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return make_transform(R, np.asarray(t_xyz, dtype=np.float64))
