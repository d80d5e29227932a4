"""Analytic occupancy and voxel-flow ground truth on a :class:`VoxelGridSpec` in base_link.

Definition (exact, no sampling):

* an object voxel is occupied when the voxel box and the solid primitive overlap with positive
  volume (boxes: separating-axis test in x/y for yawed boxes; cylinders / spheres: closest point);
* the ground is a surface: only the voxel layer whose z-range contains ``z = 0`` is occupied, with
  road / sidewalk / terrain taken at the voxel centre (as LiDAR-aggregated labels would be);
* voxels wholly below the ground (``z_max <= 0``) are :data:`~mv4d_core.data.classes.IGNORE`: no
  camera or LiDAR ray reaches them, so they are unobserved, as Occ3D's visibility masks mark them
  (scoring them as free would reward a "thin road" and punish a solid one for an unobservable
  difference);
* where several primitives share a voxel the class of higher priority wins, in the order
  ground < building < vegetation < pole < vehicle < pedestrian (small and moving things win);
* ``voxel_flow_mps`` is the winning object's velocity relative to the world, in base_link axes
  (0 for static content and free space).

The ego is planar (yaw only, base_link on the ground), so vertical primitives stay vertical.
"""

from __future__ import annotations

import numpy as np

from mv4d_core.data import classes as C
from mv4d_core.data.synth.world import World, ground_class
from mv4d_core.geometry.voxel_grid import VoxelGridSpec

_PRIORITY = {C.BUILDING: 1, C.VEGETATION: 2, C.POLE: 3, C.VEHICLE: 4, C.PEDESTRIAN: 5}


def _index_range(lo_m: float, hi_m: float, g_lo: float, vs: float, n: int) -> tuple[int, int]:
    i0 = max(int(np.floor((lo_m - g_lo) / vs)), 0)
    i1 = min(int(np.floor((hi_m - g_lo) / vs)), n - 1)
    return i0, i1


def occupancy_at(world: World, t: float, T_world_base: np.ndarray, grid: VoxelGridSpec,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(occupancy (X, Y, Z) uint8, voxel_flow_mps (X, Y, Z, 3) float32)`` at time ``t``."""
    shape = grid.shape
    lo = np.asarray(grid.range_min)
    vs = np.asarray(grid.voxel_size)
    hv = vs / 2
    occ = np.zeros(shape, dtype=np.uint8)
    flow = np.zeros(shape + (3,), dtype=np.float32)

    R_wb = T_world_base[:3, :3]
    t_wb = T_world_base[:3, 3]
    ego_yaw = float(np.arctan2(R_wb[1, 0], R_wb[0, 0]))

    # Unobservable layers under the road, then the ground surface layer.
    under = lo[2] + (np.arange(shape[2]) + 1) * vs[2] <= 0.0
    occ[:, :, under] = C.IGNORE
    k = int(np.floor((0.0 - lo[2]) / vs[2]))
    if 0 <= k < shape[2]:
        cx = lo[0] + (np.arange(shape[0]) + 0.5) * vs[0]
        cy = lo[1] + (np.arange(shape[1]) + 0.5) * vs[1]
        y_world = R_wb[1, 0] * cx[:, None] + R_wb[1, 1] * cy[None, :] + t_wb[1]
        occ[:, :, k] = ground_class(y_world)

    jobs = []  # (priority, kind, set, index)
    for kind, prims in (("box", world.boxes), ("cyl", world.cylinders), ("sph", world.spheres)):
        if len(prims) == 0:
            continue
        c_base = (prims.centers_at(t) - t_wb) @ R_wb  # world -> base: R^T (p - t)
        reach = np.linalg.norm(prims.size, axis=1)
        near = np.all(c_base + reach[:, None] > lo, axis=1) & np.all(c_base - reach[:, None] < grid.range_max, axis=1)
        for i in np.nonzero(near)[0]:
            jobs.append((_PRIORITY.get(int(prims.cls[i]), 0), kind, prims, int(i), c_base[i]))
    jobs.sort(key=lambda j: j[0])

    for _, kind, prims, i, c in jobs:
        s = prims.size[i]
        if kind == "box":
            yaw = prims.yaw[i] - ego_yaw
            cs, sn = abs(np.cos(yaw)), abs(np.sin(yaw))
            ext = np.array([s[0] * cs + s[1] * sn, s[0] * sn + s[1] * cs, s[2]])
        else:
            ext = s
        rng = [_index_range(c[a] - ext[a], c[a] + ext[a], lo[a], vs[a], shape[a]) for a in range(3)]
        if any(i1 < i0 for i0, i1 in rng):
            continue
        ax = [lo[a] + (np.arange(rng[a][0], rng[a][1] + 1) + 0.5) * vs[a] for a in range(3)]
        dx = ax[0][:, None, None] - c[0]
        dy = ax[1][None, :, None] - c[1]
        dz = ax[2][None, None, :] - c[2]
        if kind == "box":
            cyw, syw = np.cos(yaw), np.sin(yaw)
            du = dx * cyw + dy * syw
            dv = -dx * syw + dy * cyw
            hit = ((np.abs(dx) < ext[0] + hv[0]) & (np.abs(dy) < ext[1] + hv[1])
                   & (np.abs(du) < s[0] + hv[0] * cs + hv[1] * sn)
                   & (np.abs(dv) < s[1] + hv[0] * sn + hv[1] * cs)
                   & (np.abs(dz) < s[2] + hv[2]))
        elif kind == "cyl":
            qx = np.clip(0.0, dx - hv[0], dx + hv[0])  # closest voxel point to the axis, relative
            qy = np.clip(0.0, dy - hv[1], dy + hv[1])
            hit = (qx * qx + qy * qy < s[0] ** 2) & (np.abs(dz) < s[2] + hv[2])
        else:
            q = [np.clip(0.0, d - h, d + h) for d, h in zip((dx, dy, dz), hv)]
            hit = q[0] ** 2 + q[1] ** 2 + q[2] ** 2 < s[0] ** 2
        if not np.any(hit):
            continue
        sl = tuple(slice(r0, r1 + 1) for r0, r1 in rng)
        block = occ[sl]
        block[hit] = prims.cls[i]
        fblock = flow[sl]
        fblock[hit] = (prims.velocity[i] @ R_wb).astype(np.float32)
    return occ, flow
