"""Procedural textures and Lambertian shading for the synthetic street (vectorised, float32).

Textures are functions of coordinates attached to the surface (world coordinates for static
things, object-local coordinates for moving ones), so the same surface point has the same colour in
every frame and photometric losses between frames/cameras have real signal. Noise is integer
hashing of lattice cells, identical on every platform.
"""

from __future__ import annotations

import numpy as np

from mv4d_core.data.synth import world as W

SUN_DIR = (np.array([0.5, 0.35, 0.8]) / np.linalg.norm([0.5, 0.35, 0.8])).astype(np.float32)
AMBIENT = np.float32(0.45)
SKY_HORIZON = np.array([0.80, 0.86, 0.94], dtype=np.float32)
SKY_ZENITH = np.array([0.33, 0.52, 0.85], dtype=np.float32)
HAZE_M = 400.0

#: LiDAR reflectivity per material (index = material id), scaled to nuScenes-like 0..255 intensity.
REFLECTIVITY = np.array([0.0, 0.12, 0.85, 0.3, 0.25, 0.2, 0.55, 0.15, 0.35, 0.5, 0.2, 0.3], dtype=np.float32)


def hash_noise(*coords: np.ndarray, seed: int | np.ndarray = 0) -> np.ndarray:
    """Value in ``[0, 1)`` per integer lattice cell ``coords`` (int64 arrays, broadcast)."""
    h = np.asarray(seed, dtype=np.int64) * np.int64(0x27D4EB2D)
    for i, c in enumerate(coords):
        h = h ^ (np.asarray(c, dtype=np.int64) * np.int64((73856093, 19349663, 83492791)[i]))
        h = (h ^ (h >> 13)) * np.int64(1274126177)
        h = h & np.int64(0xFFFFFFFF)
    h = h ^ (h >> 16)
    return ((h & 0xFFFF).astype(np.float32) / np.float32(65536.0))


def cell(x: np.ndarray, size: float) -> np.ndarray:
    return np.floor(x / size).astype(np.int64)


def _mix(a, b, w):
    w = np.asarray(w, dtype=np.float32)[..., None]
    return a * (1 - w) + b * w


def sky_color(dirs: np.ndarray) -> np.ndarray:
    """``(R, 3)`` sky colour for world ray directions (brighter towards the horizon)."""
    e = dirs[:, 2] / np.linalg.norm(dirs, axis=1)
    return _mix(SKY_HORIZON, SKY_ZENITH, np.sqrt(np.clip(e, 0, 1)))


def _paint(x: np.ndarray, ay: np.ndarray) -> np.ndarray:
    """Lane markings: dashed centre line (3 m of every 9 m) and solid lines at |y| = 3.5 m."""
    return ((ay < 0.08) & (np.mod(x, 9.0) < 3.0)) | ((ay > 3.42) & (ay < 3.58))


def ground_material(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """World ground coordinates -> material ``(K,)`` (no texture; for LiDAR intensity)."""
    ay = np.abs(y)
    road = ay < W.ROAD_HALF
    return np.where(road, np.where(_paint(x, ay), W.M_PAINT, W.M_ASPHALT),
                    np.where(ay < W.SIDEWALK_OUTER, W.M_SIDEWALK, W.M_GRASS)).astype(np.uint8)


def ground_albedo(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World ground coordinates -> (albedo ``(K, 3)``, material ``(K,)``); each texture is only
    evaluated on its own region."""
    material = ground_material(x, y)
    albedo = np.empty((x.shape[0], 3), np.float32)
    m = np.nonzero(material == W.M_ASPHALT)[0]
    if m.size:
        xm, ym = x[m], y[m]
        n = 0.6 * hash_noise(cell(xm, 0.06), cell(ym, 0.06), seed=1) + 0.4 * hash_noise(cell(xm, 0.8), cell(ym, 0.8),
                                                                                         seed=2)
        albedo[m] = (0.27 + 0.12 * n)[:, None] * np.array([1.0, 1.0, 1.05], np.float32)
    albedo[material == W.M_PAINT] = 0.85
    m = np.nonzero(material == W.M_SIDEWALK)[0]
    if m.size:
        xm, ym = x[m], y[m]
        grout = (np.mod(xm, 1.2) < 0.05) | (np.mod(ym, 1.2) < 0.05)
        n = 0.1 * hash_noise(cell(xm, 1.2), cell(ym, 1.2), seed=3) + 0.03 * hash_noise(cell(xm, 0.06), cell(ym, 0.06),
                                                                                        seed=1)
        albedo[m] = np.where(grout, 0.42, 0.6 + n)[:, None] * np.array([1.0, 0.97, 0.93], np.float32)
    m = np.nonzero(material == W.M_GRASS)[0]
    if m.size:
        xm, ym = x[m], y[m]
        n = 0.5 * hash_noise(cell(xm, 0.1), cell(ym, 0.1), seed=4) + 0.5 * hash_noise(cell(xm, 1.5), cell(ym, 1.5),
                                                                                       seed=5)
        albedo[m] = np.array([0.22, 0.42, 0.13], np.float32) * (0.7 + 0.6 * n)[:, None]
    return albedo, material


def object_albedo(material: np.ndarray, base: np.ndarray, seed: np.ndarray, p_world: np.ndarray,
                  p_local: np.ndarray, rel_height: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Albedo ``(K, 3)`` for object hits.

    ``p_local``: hit in the object's own axes (moves with it); ``rel_height``: 0 at the bottom of
    the primitive, 1 at its top; ``normal``: world normal (picks the facade's horizontal axis).
    """
    out = base.copy()

    def fine(m):
        pl = p_local[m]
        return hash_noise(cell(pl[:, 0], 0.05), cell(pl[:, 1], 0.05), cell(pl[:, 2], 0.05), seed=seed[m])

    m = material == W.M_FACADE
    if np.any(m):
        u = np.where(np.abs(normal[m, 1]) > np.abs(normal[m, 0]), p_world[m, 0], p_world[m, 1])
        z = p_world[m, 2]
        sd = seed[m]
        row = cell(z, 0.25)
        brick_u = u + 0.3 * (row & 1)
        mortar = (np.mod(z, 0.25) < 0.035) | (np.mod(brick_u, 0.6) < 0.035)
        brick = 0.85 + 0.3 * hash_noise(cell(brick_u, 0.6), row, seed=sd)
        wall = base[m] * np.where(mortar, 1.25, brick)[:, None]
        floor_h, bay = 3.2, 3.0 + (sd % 3) * 0.5
        window = (np.mod(z, floor_h) > 0.9) & (np.mod(z, floor_h) < 2.4) & (np.mod(u, bay) > 0.7) & \
                 (np.mod(u, bay) < bay - 0.7) & (z > 1.0) & (np.abs(normal[m, 2]) < 0.5)
        lit = hash_noise(cell(u, bay), cell(z, floor_h), seed=sd + 7)
        glass = np.where(lit[:, None] > 0.8, np.array([0.75, 0.65, 0.35], np.float32),
                         np.array([0.12, 0.16, 0.22], np.float32) * (0.8 + 0.5 * lit[:, None]))
        out[m] = np.where(window[:, None], glass, wall)

    m = material == W.M_CAR_BODY
    if np.any(m):
        body = base[m] * (0.92 + 0.16 * fine(m))[:, None]
        out[m] = np.where((rel_height[m] < 0.25)[:, None], np.float32(0.07), body)
    m = material == W.M_CAR_CABIN
    if np.any(m):
        roof = normal[m, 2] > 0.5
        glass = np.array([0.08, 0.1, 0.13], np.float32) * (1 + 0.3 * fine(m)[:, None])
        out[m] = np.where(roof[:, None], base[m], glass)
    m = material == W.M_PERSON
    if np.any(m):
        h = rel_height[m]
        skin = np.array([0.85, 0.64, 0.5], np.float32)
        pants = np.array([0.15, 0.15, 0.25], np.float32) + 0.2 * base[m]
        out[m] = np.where((h > 0.87)[:, None], skin, np.where((h > 0.47)[:, None], base[m], pants))
    m = (material == W.M_BARK) | (material == W.M_METAL)
    if np.any(m):
        out[m] = base[m] * (0.85 + 0.3 * hash_noise(cell(p_local[m, 2], 0.1), seed=seed[m]))[:, None]
    m = material == W.M_FOLIAGE
    if np.any(m):
        pl = p_local[m]
        n1 = hash_noise(cell(pl[:, 0], 0.25), cell(pl[:, 1], 0.25), cell(pl[:, 2], 0.25), seed=seed[m])
        out[m] = base[m] * (0.55 + 0.8 * n1)[:, None]
    return out


def shade(albedo: np.ndarray, normal: np.ndarray, dist_m: np.ndarray, sky: np.ndarray = SKY_HORIZON) -> np.ndarray:
    """Lambertian sun + ambient, with a faint distance haze towards the sky colour; ``(K, 3)`` 0..1."""
    lambert = np.clip(normal @ SUN_DIR, 0.0, 1.0)
    sky_fill = 0.8 + 0.2 * normal[:, 2]  # hemispheric ambient: faces turned up see more sky
    c = albedo * (AMBIENT * sky_fill + (1 - AMBIENT) * lambert)[:, None]
    haze = (1.0 - np.exp(-dist_m / HAZE_M)).astype(np.float32)
    c += (sky - c) * haze[:, None]
    return np.clip(c, 0.0, 1.0, out=c)
