"""Exact, vectorised ray casting against the synthetic primitives (numpy, float32).

All rays of a bundle share one origin. Directions need not be unit length: the returned ``t`` is
in units of the direction vector, so unit-z optical rays give optical depth and unit rays give
range. Every primitive test runs over all ``(rays, primitives)`` pairs at once; bundles are kept
small by cone culling (:func:`cone_select`), so the cost is roughly rays x visible primitives.

* ground: plane ``z = 0`` seen from above;
* boxes: yaw-rotated boxes, slab test in the box frame;
* cylinders: vertical, finite, side wall (quadratic in x/y) + top cap;
* spheres: quadratic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KIND_NONE, KIND_GROUND, KIND_BOX, KIND_CYLINDER, KIND_SPHERE = -1, 0, 1, 2, 3
_EPS = np.float32(1e-4)


@dataclass
class Posed:
    """Primitives of one shape at one instant, float32, in the (shifted) casting frame."""

    center: np.ndarray   # (K, 3)
    size: np.ndarray     # (K, 3)
    cos: np.ndarray      # (K,) cos(yaw)
    sin: np.ndarray      # (K,)
    radius: np.ndarray   # (K,) bounding-sphere radius for culling

    def take(self, idx: np.ndarray) -> "Posed":
        return Posed(self.center[idx], self.size[idx], self.cos[idx], self.sin[idx], self.radius[idx])

    def __len__(self) -> int:
        return int(self.center.shape[0])


@dataclass
class Hits:
    """Nearest hit per ray: ``t`` ``(R,)`` (inf = nothing), ``kind`` ``(R,)`` int8, ``index`` ``(R,)``
    int32 into the *full* primitive set of that kind (-1 for ground / none)."""

    t: np.ndarray
    kind: np.ndarray
    index: np.ndarray


def cone_select(origin: np.ndarray, axis: np.ndarray, half_angle: float, prims: Posed, max_range: float) -> np.ndarray:
    """Indices of primitives whose bounding sphere may meet the cone ``(origin, axis, half_angle)``
    within ``max_range`` (conservative: never drops a visible primitive)."""
    if len(prims) == 0:
        return np.zeros(0, dtype=np.int64)
    v = prims.center - origin
    dist = np.linalg.norm(v, axis=1)
    r = prims.radius
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_a = (v @ axis) / np.maximum(dist, 1e-9)
        ang = np.arccos(np.clip(cos_a, -1.0, 1.0))
        widen = np.arcsin(np.clip(r / np.maximum(dist, 1e-9), 0.0, 1.0))
    keep = (dist <= r) | ((ang <= half_angle + widen) & (dist - r <= max_range))
    return np.nonzero(keep)[0]


def bundle_cone(dirs: np.ndarray) -> tuple[np.ndarray, float]:
    """Axis and half angle (rad) of a cone containing every direction of ``dirs`` ``(R, 3)``."""
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    axis = unit.mean(0)
    axis /= np.linalg.norm(axis)
    half = float(np.arccos(np.clip((unit @ axis).min(), -1.0, 1.0)))
    return axis, half + 0.01  # margin absorbs float32 rounding in cone_select


# The pairwise tests below work on (K primitives, R rays) arrays with the rays contiguous:
# numpy broadcasting is fast when the long axis is the inner one, and K is small after culling.
# Ray directions come transposed, ``dT`` (3, R). Everything is elementwise (no BLAS), so a ray's
# result never depends on which other primitives were culled.

def _ground_t(origin: np.ndarray, dT: np.ndarray) -> np.ndarray:
    """``(R,)`` ray parameter of the ground plane ``z = 0`` (inf where missed)."""
    dz = dT[2]
    t = -origin[2] / dz
    return np.where((dz < 0) & (t > _EPS), t, np.inf).astype(np.float32)


def _finish(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    near[~((near <= far) & (near > _EPS))] = np.inf
    return near


def _slab_aligned(origin, dT, center, size):
    """Entry ``t`` ``(B, R)`` for axis-aligned boxes (yaw 0 or pi): one reciprocal per ray and axis."""
    near = far = None
    for a in range(3):
        inv = 1.0 / dT[a]                                            # (R,)
        o = (origin[a] - center[:, a])[:, None]                      # (B, 1)
        h = size[:, a][:, None]
        lo, hi = (-h - o) * inv, (h - o) * inv
        if near is None:
            near, far = np.fmin(lo, hi), np.fmax(lo, hi)
        else:
            np.fmax(near, np.fmin(lo, hi), out=near)
            np.fmin(far, np.fmax(lo, hi), out=far)
    return _finish(near, far)


def _slab_rotated(origin, dT, boxes):
    """Entry ``t`` ``(B, R)`` for yawed boxes: the slab test in each box's own axes."""
    o = (origin - boxes.center)                         # (B, 3) origin relative to each box
    c, s = boxes.cos[:, None], boxes.sin[:, None]
    ox = c * o[:, 0:1] + s * o[:, 1:2]                  # origin in box axes (B, 1)
    oy = -s * o[:, 0:1] + c * o[:, 1:2]
    oz = o[:, 2:3]
    hx, hy, hz = boxes.size[:, 0:1], boxes.size[:, 1:2], boxes.size[:, 2:3]
    dx, dy, dz = dT[0], dT[1], dT[2]
    ix = 1.0 / (dx * c + dy * s)                        # (B, R) inverse local directions
    iy = 1.0 / (dy * c - dx * s)
    iz = 1.0 / dz                                       # (R,)
    a, b = (-hx - ox) * ix, (hx - ox) * ix
    near, far = np.fmin(a, b), np.fmax(a, b)
    a, b = (-hy - oy) * iy, (hy - oy) * iy
    np.fmax(near, np.fmin(a, b), out=near)
    np.fmin(far, np.fmax(a, b), out=far)
    a, b = (-hz - oz) * iz, (hz - oz) * iz
    np.fmax(near, np.fmin(a, b), out=near)
    np.fmin(far, np.fmax(a, b), out=far)
    return _finish(near, far)


def _nearest(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(K, R)`` -> (min over K ``(R,)`` float32, argmin ``(R,)``)."""
    idx = np.argmin(t, axis=0)
    return t[idx, np.arange(t.shape[1])].astype(np.float32), idx


def _boxes(origin: np.ndarray, dT: np.ndarray, boxes: Posed) -> tuple[np.ndarray, np.ndarray]:
    """Nearest box entry per ray: ``(t (R,), local index (R,))`` (-1 / inf when no box is hit).

    Boxes with yaw 0 or pi (a box is symmetric) take the cheaper axis-aligned path.
    """
    R = dT.shape[1]
    if len(boxes) == 0:
        return np.full(R, np.inf, np.float32), np.full(R, -1, np.int64)
    aligned = np.abs(boxes.sin) < 1e-6
    if aligned.all():
        return _nearest(_slab_aligned(origin, dT, boxes.center, boxes.size))
    if not aligned.any():
        return _nearest(_slab_rotated(origin, dT, boxes))
    best_t = np.full(R, np.inf, np.float32)
    best_i = np.full(R, -1, np.int64)
    for mask, fn in ((aligned, lambda b: _slab_aligned(origin, dT, b.center, b.size)),
                     (~aligned, lambda b: _slab_rotated(origin, dT, b))):
        idx = np.nonzero(mask)[0]
        t, j = _nearest(fn(boxes.take(idx)))
        closer = t < best_t
        best_t[closer] = t[closer]
        best_i[closer] = idx[j[closer]]
    return best_t, best_i


def _cylinders(origin: np.ndarray, dT: np.ndarray, cyl: Posed) -> tuple[np.ndarray, np.ndarray]:
    """Nearest vertical finite cylinder per ray (side wall, plus the top cap when seen from above)."""
    R = dT.shape[1]
    if len(cyl) == 0:
        return np.full(R, np.inf, np.float32), np.full(R, -1, np.int64)
    ox = (origin[0] - cyl.center[:, 0])[:, None]        # (C, 1)
    oy = (origin[1] - cyl.center[:, 1])[:, None]
    r = cyl.size[:, 0:1]
    z0 = (cyl.center[:, 2] - cyl.size[:, 2])[:, None]
    z1 = (cyl.center[:, 2] + cyl.size[:, 2])[:, None]
    dx, dy, dz = dT[0], dT[1], dT[2]
    a = dx * dx + dy * dy                               # (R,)
    b = dx * ox + dy * oy                               # (C, R) half of the usual b
    cc = ox * ox + oy * oy - r * r                      # (C, 1)
    disc = b * b - a * cc
    t = (-b - np.sqrt(disc)) / a
    z = origin[2] + t * dz
    t = np.where((disc >= 0) & (t > _EPS) & (z >= z0) & (z <= z1), t, np.inf)
    above = origin[2] > z1                              # caps are only visible from above
    if np.any(above):
        tc = (z1 - origin[2]) / dz
        px, py = ox + tc * dx, oy + tc * dy
        cap = above & (tc > _EPS) & (px * px + py * py <= r * r)
        t = np.where(cap & (tc < t), tc, t)
    return _nearest(t)


def _spheres(origin: np.ndarray, dT: np.ndarray, sph: Posed) -> tuple[np.ndarray, np.ndarray]:
    """Nearest sphere entry per ray."""
    R = dT.shape[1]
    if len(sph) == 0:
        return np.full(R, np.inf, np.float32), np.full(R, -1, np.int64)
    oc = origin - sph.center                            # (S, 3)
    r = sph.size[:, 0:1]
    a = dT[0] * dT[0] + dT[1] * dT[1] + dT[2] * dT[2]   # (R,)
    b = dT[0] * oc[:, 0:1] + dT[1] * oc[:, 1:2] + dT[2] * oc[:, 2:3]   # (S, R)
    cc = (oc * oc).sum(1, keepdims=True) - r * r
    disc = b * b - a * cc
    t = (-b - np.sqrt(disc)) / a
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    return _nearest(t)


def _transposed(fn):
    """Public form of a raw test: takes ``dirs`` ``(R, 3)``, silences expected float warnings."""
    def wrapped(origin, dirs, *args):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return fn(np.asarray(origin, np.float32), np.ascontiguousarray(np.asarray(dirs, np.float32).T), *args)
    wrapped.__name__, wrapped.__doc__ = fn.__name__.lstrip("_"), fn.__doc__
    return wrapped


intersect_ground = _transposed(_ground_t)
intersect_boxes = _transposed(_boxes)
intersect_cylinders = _transposed(_cylinders)
intersect_spheres = _transposed(_spheres)


def cast_bundle(origin: np.ndarray, dirs: np.ndarray, prims: dict[int, Posed], max_t: np.ndarray | float,
                max_range: float, candidates: dict[int, np.ndarray] | None = None,
                cone: tuple[np.ndarray, float] | None = None) -> Hits:
    """Nearest surface along each ray of a bundle sharing ``origin``.

    ``prims`` maps ``KIND_BOX/CYLINDER/SPHERE`` to the posed primitives; ``max_t`` ``(R,)`` or
    scalar: hits beyond it are dropped (sky / out of range). ``candidates`` (per kind, indices of
    primitives that may be hit, from a conservative cull done by the caller) or else ``cone``
    (axis, half angle; computed from ``dirs`` when missing) selects the primitives to test.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _cast(origin, dirs, prims, max_t, max_range, candidates, cone)


def _cast(origin, dirs, prims, max_t, max_range, candidates, cone) -> Hits:
    origin = np.asarray(origin, dtype=np.float32)
    dirs = np.asarray(dirs, dtype=np.float32)
    if candidates is None:
        axis, half = cone if cone is not None else bundle_cone(dirs)
    dT = np.ascontiguousarray(dirs.T)                   # (3, R): rays on the fast axis
    best_t = _ground_t(origin, dT)
    kind = np.where(np.isfinite(best_t), KIND_GROUND, KIND_NONE).astype(np.int8)
    index = np.full(dirs.shape[0], -1, dtype=np.int32)
    for k, fn in ((KIND_BOX, _boxes), (KIND_CYLINDER, _cylinders), (KIND_SPHERE, _spheres)):
        p = prims.get(k)
        if p is None or len(p) == 0:
            continue
        sel = candidates[k] if candidates is not None else cone_select(origin, axis, half, p, max_range)
        if sel.size == 0:
            continue
        t, li = fn(origin, dT, p.take(sel))
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        kind[closer] = k
        index[closer] = sel[li[closer]]
    far = best_t > max_t
    best_t[far] = np.inf
    kind[far] = KIND_NONE
    index[far] = -1
    return Hits(best_t.astype(np.float32), kind, index)
