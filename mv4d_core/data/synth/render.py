"""Render one time instant of the synthetic street: camera images + exact depth/semantics, LiDAR.

Casting happens in a world frame shifted by the ego position (translation only) so float32 keeps
millimetre precision however far the ego has driven; textures use unshifted world coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mv4d_core.data.synth import shading
from mv4d_core.data.synth.raycast import (KIND_BOX, KIND_CYLINDER, KIND_GROUND, KIND_SPHERE, Hits, Posed,
                                          cast_bundle)
from mv4d_core.data.synth.rig import LidarPattern
from mv4d_core.data.synth.world import PrimitiveSet, World, ground_class
from mv4d_core.geometry.rig import Rig

CAMERA_MAX_RANGE_M = 150.0


@dataclass
class Scene:
    """The world posed at one instant, float32, relative to ``shift`` (world xy of the ego)."""

    shift: np.ndarray
    posed: dict[int, Posed]
    sets: dict[int, PrimitiveSet]


def pose_scene(world: World, t: float, shift: np.ndarray) -> Scene:
    posed, sets = {}, {}
    for kind, prims in ((KIND_BOX, world.boxes), (KIND_CYLINDER, world.cylinders), (KIND_SPHERE, world.spheres)):
        c = (prims.centers_at(t) - shift).astype(np.float32)
        radius = np.linalg.norm(prims.size, axis=1).astype(np.float32)
        posed[kind] = Posed(c, prims.size.astype(np.float32), np.cos(prims.yaw).astype(np.float32),
                            np.sin(prims.yaw).astype(np.float32), radius)
        sets[kind] = prims
    return Scene(np.asarray(shift, dtype=np.float64), posed, sets)


@dataclass
class Surface:
    """Attributes of the hit surfaces (``K`` hits, grouped by primitive kind; ``ray`` maps back)."""

    ray: np.ndarray        # (K,) index of the ray in the cast arrays
    point: np.ndarray      # (K, 3) shifted world
    normal: np.ndarray     # (K, 3) world unit normal
    cls: np.ndarray        # (K,) uint8
    material: np.ndarray   # (K,) uint8
    albedo: np.ndarray     # (K, 3) float32 0..1
    velocity: np.ndarray   # (K, 3) world m/s


def surface(scene: Scene, hits: Hits, origin: np.ndarray, dirs: np.ndarray, with_albedo: bool = True) -> Surface:
    """Normals, classes, textures and velocities of every ray that hit something.

    Rows are sorted by primitive kind so each kind is shaded on a contiguous slice;
    ``with_albedo=False`` skips the textures (the LiDAR needs materials and normals only).
    """
    rays = np.nonzero(hits.kind >= 0)[0]
    rays = rays[np.argsort(hits.kind[rays], kind="stable")]
    kind = hits.kind[rays]
    bounds = np.searchsorted(kind, [KIND_GROUND, KIND_BOX, KIND_CYLINDER, KIND_SPHERE, KIND_SPHERE + 1])
    p = (origin[rays] if origin.ndim == 2 else origin) + hits.t[rays, None] * dirs[rays]
    index = hits.index[rays]
    K = p.shape[0]
    normal = np.zeros((K, 3), np.float32)
    cls = np.zeros(K, np.uint8)
    material = np.zeros(K, np.uint8)
    albedo = np.zeros((K, 3), np.float32)
    velocity = np.zeros((K, 3), np.float64)

    g = slice(bounds[0], bounds[1])
    if g.stop > g.start:
        xw = p[g, 0] + np.float32(scene.shift[0])
        yw = p[g, 1] + np.float32(scene.shift[1])
        normal[g, 2] = 1.0
        cls[g] = ground_class(yw)
        if with_albedo:
            albedo[g], material[g] = shading.ground_albedo(xw, yw)
        else:
            material[g] = shading.ground_material(xw, yw)

    for j, k in enumerate((KIND_BOX, KIND_CYLINDER, KIND_SPHERE)):
        m = slice(bounds[j + 1], bounds[j + 2])
        if m.stop <= m.start:
            continue
        i = index[m]
        ps, prims = scene.posed[k], scene.sets[k]
        rel = p[m] - ps.center[i]
        size = ps.size[i]
        if k == KIND_BOX:
            c, s = ps.cos[i], ps.sin[i]
            local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)
            axis = np.argmax(np.abs(local) / size, axis=1)
            n_local = np.zeros_like(local)
            n_local[np.arange(len(i)), axis] = np.sign(local[np.arange(len(i)), axis])
            n = np.stack([c * n_local[:, 0] - s * n_local[:, 1], s * n_local[:, 0] + c * n_local[:, 1],
                          n_local[:, 2]], -1)
        elif k == KIND_CYLINDER:
            local = rel
            top = local[:, 2] >= size[:, 2] - 1e-3
            n = np.concatenate([local[:, :2] / size[:, :1], np.zeros((len(i), 1), np.float32)], 1)
            n[top] = (0, 0, 1)
        else:
            local = rel
            n = local / size[:, :1]
        rel_h = (local[:, 2] + size[:, 2]) / (2 * size[:, 2])
        normal[m] = n
        cls[m] = prims.cls[i]
        material[m] = prims.material[i]
        velocity[m] = prims.velocity[i]
        if with_albedo:
            albedo[m] = shading.object_albedo(prims.material[i], prims.color[i], prims.seed[i],
                                              p[m] + scene.shift.astype(np.float32), local, rel_h, n)
    return Surface(rays, p, normal, cls, material, albedo, velocity)


def _camera_tiles(rig: Rig, tiles: tuple[int, int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per camera and tile: (camera index, flat pixel indices into (H*W), optical unit-z rays (R, 3))."""
    out = []
    for ci, cam in enumerate(rig.cameras):
        H, W = cam.camera.height, cam.camera.width
        Kinv = np.linalg.inv(cam.camera.K)
        for rr in np.array_split(np.arange(H), tiles[1]):
            for cc in np.array_split(np.arange(W), tiles[0]):
                v, u = np.meshgrid(rr, cc, indexing="ij")
                pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], -1)
                bounds = (cc[0] - 0.5, cc[-1] + 0.5, rr[0] - 0.5, rr[-1] + 0.5)
                out.append((ci, (v * W + u).ravel(), pix @ Kinv.T, bounds))
    return out


def _aabb_corners(scene: Scene) -> dict[int, np.ndarray]:
    """Per kind ``(K, 8, 3)`` corners of each primitive's axis-aligned bounding box (shifted world)."""
    out = {}
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)
    for k, ps in scene.posed.items():
        ext = ps.size.copy()
        if k == KIND_BOX:
            c, s = np.abs(ps.cos), np.abs(ps.sin)
            ext[:, 0] = ps.size[:, 0] * c + ps.size[:, 1] * s
            ext[:, 1] = ps.size[:, 0] * s + ps.size[:, 1] * c
        out[k] = ps.center[:, None, :] + signs[None] * ext[:, None, :]
    return out


def _camera_candidates(corners: dict[int, np.ndarray], T_wc: np.ndarray, shift: np.ndarray, K: np.ndarray,
                       tile_bounds: list[tuple[float, float, float, float]]) -> list[dict[int, np.ndarray]]:
    """Per tile and kind, primitives whose projected bounding box overlaps the tile (conservative:
    a box reaching behind the camera plane is kept for every tile)."""
    T_cw = np.linalg.inv(T_wc)
    R, t = T_cw[:3, :3], T_cw[:3, 3] + T_cw[:3, :3] @ shift
    out: list[dict[int, np.ndarray]] = [{} for _ in tile_bounds]
    b = np.asarray(tile_bounds)                                  # (T, 4)
    for k, cor in corners.items():
        pc = cor @ R.T + t                                       # (K, 8, 3) optical frame
        z = pc[..., 2]
        front = np.all(z > 0.05, axis=1)
        straddle = ~front & np.any(z > 0.05, axis=1)
        zs = np.where(z > 0.05, z, 1.0)
        u = K[0, 0] * pc[..., 0] / zs + K[0, 2]
        v = K[1, 1] * pc[..., 1] / zs + K[1, 2]
        umin, umax, vmin, vmax = u.min(1), u.max(1), v.min(1), v.max(1)
        ov = ((umax[None] >= b[:, 0:1]) & (umin[None] <= b[:, 1:2]) & (vmax[None] >= b[:, 2:3])
              & (vmin[None] <= b[:, 3:4]) & front[None]) | straddle[None]
        for ti in range(len(tile_bounds)):
            out[ti][k] = np.nonzero(ov[ti])[0]
    return out


def _azimuth_candidates(corners: dict[int, np.ndarray], origin: np.ndarray, centers_rad: np.ndarray,
                        half_width_rad: float) -> list[dict[int, np.ndarray]]:
    """Per azimuth sector (world azimuth ``centers_rad`` +- ``half_width_rad`` around ``origin``),
    primitives whose bounding box spans an overlapping azimuth interval. Conservative: the
    azimuth range of a convex box seen from outside is spanned by its corners; boxes around the
    origin, or spanning more than 180 deg, are kept everywhere."""
    out: list[dict[int, np.ndarray]] = [{} for _ in centers_rad]
    for k, cor in corners.items():
        rel = cor[..., :2] - origin[:2]
        az = np.arctan2(rel[..., 1], rel[..., 0])                       # (K, 8)
        d = np.angle(np.exp(1j * (az[None] - centers_rad[:, None, None])))  # (S, K, 8) wrapped
        lo, hi = d.min(2), d.max(2)
        # corners[0] is the (-, -, -) corner, corners[7] the (+, +, +) one
        inside = np.all(cor[:, 0, :2] <= origin[:2], axis=-1) & np.all(cor[:, 7, :2] >= origin[:2], axis=-1)
        keep = ((lo <= half_width_rad) & (hi >= -half_width_rad)) | (hi - lo > np.pi) | inside[None]
        for si in range(len(centers_rad)):
            out[si][k] = np.nonzero(keep[si])[0]
    return out


@dataclass
class _RayLayout:
    """Fixed ray set of a rig + LiDAR pattern, ordered by bundle (cached between frames)."""

    cam_rays: np.ndarray          # (Rc, 3) optical unit-z rays, camera-major then tile-major
    cam_flat: np.ndarray          # (Rc,) pixel index into H*W of its camera
    cam_slices: list[slice]       # per camera, its rays
    tiles: list[tuple[int, slice, tuple[float, float, float, float]]]  # (camera, rays, pixel bounds)
    lidar_dirs_base: np.ndarray   # (Rl, 3) unit directions in base_link, sector-major
    lidar_beam: np.ndarray        # (Rl,) beam (ring) index of each direction
    lidar_slices: list[slice]
    sector_centers_base: np.ndarray
    sector_half_width: float
    max_t: np.ndarray             # (Rc + Rl,) farthest accepted hit per ray


_LAYOUT_CACHE: dict = {}


def _ray_layout(rig: Rig, pattern: LidarPattern, tiles: tuple[int, int], sectors: int) -> _RayLayout:
    key = (tuple((c.name, c.camera.width, c.camera.height, c.camera.K.tobytes()) for c in rig.cameras),
           rig.lidar.T_base_lidar.tobytes(), pattern, tiles, sectors)
    if key in _LAYOUT_CACHE:
        return _LAYOUT_CACHE[key]
    rays, flats, cam_slices, tile_list = [], [], [], []
    start = 0
    for ci, flat, rays_opt, bounds in _camera_tiles(rig, tiles):
        rays.append(rays_opt)
        flats.append(flat)
        tile_list.append((ci, slice(start, start + len(flat)), bounds))
        start += len(flat)
    for ci in range(rig.num_cameras):
        mine = [t[1] for t in tile_list if t[0] == ci]
        cam_slices.append(slice(mine[0].start, mine[-1].stop))
    cam_rays = np.concatenate(rays)
    dirs_base = pattern.directions() @ rig.lidar.T_base_lidar[:3, :3].T
    width = 2 * np.pi / sectors
    az = np.arctan2(dirs_base[:, 1], dirs_base[:, 0])
    sector = np.floor((az + np.pi) / width).astype(np.int64).clip(0, sectors - 1)
    order = np.argsort(sector, kind="stable")
    bounds = np.searchsorted(sector[order], np.arange(sectors + 1))
    max_t = np.concatenate([CAMERA_MAX_RANGE_M / np.linalg.norm(cam_rays, axis=1),
                            np.full(len(dirs_base), pattern.max_range_m)]).astype(np.float32)
    layout = _RayLayout(cam_rays, np.concatenate(flats), cam_slices, tile_list, dirs_base[order],
                        (order // pattern.azimuth_steps).astype(np.int16),   # pattern directions are beam-major
                        [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(sectors)],
                        -np.pi + (np.arange(sectors) + 0.5) * width, width / 2, max_t)
    _LAYOUT_CACHE.clear()
    _LAYOUT_CACHE[key] = layout
    return layout


def render_sensors(scene: Scene, rig: Rig, pattern: LidarPattern, T_world_base: np.ndarray, dt_s: float,
                   tiles: tuple[int, int] = (4, 2), sectors: int = 32, cull: bool = True) -> dict[str, np.ndarray]:
    """Cast every camera pixel and LiDAR beam, then shade all hits in one pass.

    Returns ``images (N, H, W, 3) uint8``, ``depth_m (N, H, W) float32`` (optical z, inf = sky),
    ``semantics (N, H, W) uint8``, and for the LiDAR returns within range ``lidar_xyz (P, 3)``
    (base_link), ``lidar_intensity (P,)`` 0..255, ``point_flow_m (P, 3)`` (object world velocity
    in base_link axes x ``dt_s``), ``lidar_semantics (P,)``, ``lidar_ring (P,)`` beam index. Images are cast in ``tiles``
    (columns, rows) and the LiDAR in ``sectors`` azimuth slices; each bundle only tests the
    primitives whose bounding box can reach it (projected box vs tile, azimuth range vs sector).
    ``cull=False`` tests every primitive for every ray (same result, for benchmarks).
    """
    N = rig.num_cameras
    H, W = rig.cameras[0].camera.height, rig.cameras[0].camera.width
    lay = _ray_layout(rig, pattern, tiles, sectors)
    n_cam_rays = lay.cam_rays.shape[0]
    R_total = n_cam_rays + lay.lidar_dirs_base.shape[0]
    dirs = np.empty((R_total, 3), np.float32)
    origins = np.empty((R_total, 3), np.float32)
    bundles: list[tuple[slice, dict[int, np.ndarray] | None]] = []
    corners = _aabb_corners(scene)
    for ci, cam in enumerate(rig.cameras):
        T_wc = T_world_base @ cam.T_base_cam
        sl = lay.cam_slices[ci]
        dirs[sl] = lay.cam_rays[sl] @ T_wc[:3, :3].T          # unit-z optical rays: t == optical depth
        origins[sl] = T_wc[:3, 3] - scene.shift
        mine = [t for t in lay.tiles if t[0] == ci]
        cands = _camera_candidates(corners, T_wc, scene.shift, cam.camera.K, [t[2] for t in mine])
        bundles += [(t[1], c) for t, c in zip(mine, cands)]

    t_bl = rig.lidar.T_base_lidar[:3, 3]
    R_wb = T_world_base[:3, :3]
    lid = slice(n_cam_rays, R_total)
    dirs[lid] = lay.lidar_dirs_base @ R_wb.T
    origins[lid] = (T_world_base @ np.append(t_bl, 1.0))[:3] - scene.shift
    yaw = np.arctan2(R_wb[1, 0], R_wb[0, 0])                  # planar ego: world azimuth = base + yaw
    az_cands = _azimuth_candidates(corners, origins[n_cam_rays], lay.sector_centers_base + yaw,
                                   lay.sector_half_width + 1e-3)
    bundles += [(slice(sl.start + n_cam_rays, sl.stop + n_cam_rays), c) for sl, c in zip(lay.lidar_slices, az_cands)]

    if not cull:
        everything = {k: np.arange(len(p)) for k, p in scene.posed.items()}
        bundles = [(sl, everything) for sl, _ in bundles]
    all_hits = Hits(np.empty(R_total, np.float32), np.empty(R_total, np.int8), np.empty(R_total, np.int32))
    for sl, cand in bundles:
        h = cast_bundle(origins[sl.start], dirs[sl], scene.posed, lay.max_t[sl], CAMERA_MAX_RANGE_M, cand)
        all_hits.t[sl], all_hits.kind[sl], all_hits.index[sl] = h.t, h.kind, h.index
    cam = slice(0, n_cam_rays)
    cam_hits = Hits(all_hits.t[cam], all_hits.kind[cam], all_hits.index[cam])
    srf = surface(scene, cam_hits, origins[cam], dirs[cam])
    cam_dirs = dirs[cam]
    color = np.empty((n_cam_rays, 3), np.float32)
    miss = np.nonzero(cam_hits.kind < 0)[0]
    color[miss] = shading.sky_color(cam_dirs[miss])
    dist = cam_hits.t[srf.ray] * np.linalg.norm(cam_dirs[srf.ray], axis=1)
    color[srf.ray] = shading.shade(srf.albedo, srf.normal, dist)  # haze towards the horizon colour
    sem_rays = np.zeros(n_cam_rays, np.uint8)
    sem_rays[srf.ray] = srf.cls
    rgb = (color * 255 + 0.5).astype(np.uint8)

    images = np.zeros((N, H * W, 3), np.uint8)
    depth = np.full((N, H * W), np.inf, np.float32)
    sem = np.zeros((N, H * W), np.uint8)
    for ci, sl in enumerate(lay.cam_slices):
        flat = lay.cam_flat[sl]
        images[ci, flat] = rgb[sl]
        depth[ci, flat] = all_hits.t[sl]
        sem[ci, flat] = sem_rays[sl]

    lid_hits = Hits(all_hits.t[lid], all_hits.kind[lid], all_hits.index[lid])
    lsrf = surface(scene, lid_hits, origins[lid], dirs[lid], with_albedo=False)
    rows = np.argsort(lsrf.ray)                         # LiDAR points in beam order within sectors
    ray = lsrf.ray[rows]
    db = lay.lidar_dirs_base[ray]
    r = lid_hits.t[ray]
    cos_inc = np.abs(np.einsum("ij,ij->i", lsrf.normal[rows], dirs[lid][ray]))
    return {
        "images": images.reshape(N, H, W, 3),
        "depth_m": depth.reshape(N, H, W),
        "semantics": sem.reshape(N, H, W),
        "lidar_xyz": (t_bl + r[:, None] * db).astype(np.float32),
        "lidar_intensity": (shading.REFLECTIVITY[lsrf.material[rows]] * cos_inc * 255).astype(np.float32),
        "point_flow_m": (lsrf.velocity[rows] @ R_wb * dt_s).astype(np.float32),
        "lidar_semantics": lsrf.cls[rows],
        "lidar_ring": lay.lidar_beam[ray],
    }
