"""The procedural street: primitives (boxes, vertical cylinders, spheres), ground layout and ego path.

World frame ``world`` (REP 103, metres): x along the street, y to the left, z up, ground plane
``z = 0``. Cross-section in world y (symmetric about the centre line ``y = 0``)::

    |y| <  3.5   two travel lanes (ego drives +x in the right lane, y = -1.75; oncoming at +1.75)
    3.5 .. 7.0   parking lanes with parked cars (still road)
    7.0 .. 10.0  sidewalks with pedestrians and lamp poles
    10.0 .. 13   grass verge with trees
    >= 13        building facades (boxes, 6-18 m high)

Every object is placed by walking along x with its own random stream, so a longer sequence with
the same seed contains the same objects plus more further along the street. Moving objects have a
constant world velocity; their position at time ``t`` (s after the first frame) is
``center + velocity * t``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mv4d_core.data import classes as C
from mv4d_core.geometry.transforms import yaw_transform

# Materials select the procedural texture in shading.py.
M_ASPHALT, M_PAINT, M_SIDEWALK, M_GRASS, M_FACADE, M_CAR_BODY, M_CAR_CABIN, M_PERSON, M_METAL, M_BARK, \
    M_FOLIAGE = range(1, 12)

LANE_WIDTH = 3.5
TRAVEL_HALF = 3.5
ROAD_HALF = 7.0
SIDEWALK_OUTER = 10.0
VERGE_OUTER = 13.0
EGO_LANE_Y = -1.75


@dataclass
class PrimitiveSet:
    """``K`` primitives of one shape. ``center`` ``(K, 3)`` world m at ``t = 0``; ``size`` ``(K, 3)``:
    half extents (box), ``(radius, radius, half_height)`` (cylinder) or ``(radius,) * 3`` (sphere);
    ``yaw`` ``(K,)`` rad (boxes only); ``velocity`` ``(K, 3)`` world m/s; ``cls`` class ids;
    ``material`` texture ids; ``color`` ``(K, 3)`` albedo 0..1; ``seed`` per-object texture seed."""

    center: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    cls: np.ndarray
    material: np.ndarray
    color: np.ndarray
    seed: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "PrimitiveSet":
        def col(key, shape, dtype):
            if not rows:
                return np.zeros((0,) + shape, dtype=dtype)
            return np.asarray([r[key] for r in rows], dtype=dtype).reshape((-1,) + shape)

        return cls(col("center", (3,), np.float64), col("size", (3,), np.float64), col("yaw", (), np.float64),
                   col("velocity", (3,), np.float64), col("cls", (), np.uint8), col("material", (), np.uint8),
                   col("color", (3,), np.float32), col("seed", (), np.int64))

    def __len__(self) -> int:
        return int(self.center.shape[0])

    def centers_at(self, t: float) -> np.ndarray:
        """``(K, 3)`` world positions at time ``t`` seconds."""
        return self.center + self.velocity * t


@dataclass(frozen=True)
class EgoPath:
    """Ego drives +x at constant ``speed_mps`` in its lane with a gentle lateral sway (yaw <~ 3 deg)."""

    speed_mps: float
    sway_m: float = 0.3
    sway_period_s: float = 6.0
    y0: float = EGO_LANE_Y

    def pose_xy_yaw(self, t: float) -> tuple[float, float, float]:
        w = 2 * np.pi / self.sway_period_s
        x = self.speed_mps * t
        y = self.y0 + self.sway_m * np.sin(w * t)
        # Heading follows the path tangent, so base_link x always points along the motion.
        yaw = float(np.arctan2(self.sway_m * w * np.cos(w * t), self.speed_mps))
        return float(x), float(y), yaw

    def T_world_base(self, t: float) -> np.ndarray:
        """``(4, 4)`` base_link -> world at time ``t`` (base_link on the ground under the rear axle)."""
        x, y, yaw = self.pose_xy_yaw(t)
        return yaw_transform(yaw, (x, y, 0.0))


@dataclass
class World:
    """Everything needed to render any time instant of the street."""

    boxes: PrimitiveSet
    cylinders: PrimitiveSet
    spheres: PrimitiveSet
    ego: EgoPath
    seed: int
    x_range: tuple[float, float] = field(default=(0.0, 0.0))


def ground_class(y_world: np.ndarray) -> np.ndarray:
    """Class of the ground plane at world ``y`` (road / sidewalk / terrain)."""
    ay = np.abs(y_world)
    return np.where(ay < ROAD_HALF, C.ROAD, np.where(ay < SIDEWALK_OUTER, C.SIDEWALK, C.TERRAIN)).astype(np.uint8)


_WALL_COLORS = np.array([[0.62, 0.32, 0.25], [0.72, 0.66, 0.55], [0.55, 0.55, 0.58], [0.80, 0.75, 0.62],
                         [0.45, 0.30, 0.25], [0.68, 0.72, 0.75], [0.85, 0.82, 0.75]])
_CAR_COLORS = np.array([[0.75, 0.08, 0.08], [0.9, 0.9, 0.92], [0.22, 0.22, 0.25], [0.1, 0.2, 0.6],
                        [0.55, 0.57, 0.6], [0.85, 0.7, 0.1], [0.15, 0.45, 0.2], [0.35, 0.35, 0.38]])
_CLOTHES = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.9, 0.8, 0.2], [0.1, 0.1, 0.1], [0.2, 0.6, 0.3],
                     [0.9, 0.9, 0.9], [0.5, 0.3, 0.6]])


def _car_rows(rng, x: float, y: float, yaw: float, velocity, seed: int) -> list[dict]:
    """A car as two boxes: a long lower body and a shorter glazed cabin on top (same motion)."""
    length, width = rng.uniform(4.0, 4.9), rng.uniform(1.75, 1.95)
    body_h, cabin_h = rng.uniform(0.75, 0.95), rng.uniform(0.5, 0.65)
    color = _CAR_COLORS[rng.integers(len(_CAR_COLORS))]
    vel = np.asarray(velocity, dtype=np.float64)
    base = dict(yaw=yaw, velocity=vel, cls=C.VEHICLE, color=color, seed=seed)
    body = dict(base, center=(x, y, 0.2 + body_h / 2), size=(length / 2, width / 2, body_h / 2), material=M_CAR_BODY)
    back = rng.uniform(-0.1, 0.15) * length  # cabin slightly behind the centre
    cx, cy = x - np.cos(yaw) * back, y - np.sin(yaw) * back
    cabin = dict(base, center=(cx, cy, 0.2 + body_h + cabin_h / 2),
                 size=(0.55 * length / 2, 0.9 * width / 2, cabin_h / 2), material=M_CAR_CABIN)
    return [body, cabin]


def _walk(rng, x0: float, x1: float, lo: float, hi: float):
    """Positions from ``x0`` to ``x1`` with random spacing in ``[lo, hi)``."""
    x = x0 + rng.uniform(0, hi)
    while x < x1:
        yield x
        x += rng.uniform(lo, hi)


def make_world(seed: int, duration_s: float, ego_speed_mps: float | None = None) -> World:
    """Build the street for a drive of ``duration_s`` seconds (deterministic in ``seed``)."""
    root = np.random.SeedSequence(seed)
    # One stream per family and side, so adding street length never changes existing objects.
    r_ego, r_on, r_ahead, r_behind = (np.random.default_rng(s) for s in root.spawn(4))
    side_streams = {side: [np.random.default_rng(s) for s in np.random.SeedSequence([seed, k]).spawn(5)]
                    for k, side in enumerate((-1.0, 1.0))}
    speed = float(ego_speed_mps if ego_speed_mps is not None else r_ego.uniform(6.0, 9.0))
    ego = EgoPath(speed_mps=speed, sway_m=float(r_ego.uniform(0.15, 0.35)), sway_period_s=float(r_ego.uniform(5, 8)))
    x_lo, x_hi = -120.0, speed * duration_s + 120.0
    boxes: list[dict] = []
    cyls: list[dict] = []
    spheres: list[dict] = []

    def tex_seed(rng) -> int:
        return int(rng.integers(0, 2**31 - 1))

    for side in (-1.0, 1.0):
        r_bld, r_tree, r_pole, r_park, r_ped = side_streams[side]
        # Building facades: a row of boxes with small gaps and setbacks.
        x = x_lo
        while x < x_hi:
            length = r_bld.uniform(8.0, 22.0)
            depth = r_bld.uniform(8.0, 14.0)
            height = r_bld.uniform(6.0, 18.0)
            front = VERGE_OUTER + r_bld.uniform(0.0, 1.5)
            boxes.append(dict(center=(x + length / 2, side * (front + depth / 2), height / 2),
                              size=(length / 2, depth / 2, height / 2), yaw=0.0, velocity=(0, 0, 0), cls=C.BUILDING,
                              material=M_FACADE, color=_WALL_COLORS[r_bld.integers(len(_WALL_COLORS))],
                              seed=tex_seed(r_bld)))
            x += length + (r_bld.uniform(1.0, 4.0) if r_bld.random() < 0.35 else 0.0)
        # Trees on the grass verge: trunk cylinder + crown sphere.
        for x in _walk(r_tree, x_lo, x_hi, 9.0, 20.0):
            y = side * r_tree.uniform(10.9, 11.3)
            trunk_h, crown_r = r_tree.uniform(2.2, 3.0), r_tree.uniform(1.3, 1.75)
            cyls.append(dict(center=(x, y, trunk_h / 2), size=(0.16, 0.16, trunk_h / 2), yaw=0.0, velocity=(0, 0, 0),
                             cls=C.VEGETATION, material=M_BARK, color=(0.36, 0.25, 0.16), seed=tex_seed(r_tree)))
            spheres.append(dict(center=(x, y, trunk_h + crown_r * 0.7), size=(crown_r,) * 3, yaw=0.0,
                                velocity=(0, 0, 0), cls=C.VEGETATION, material=M_FOLIAGE,
                                color=(0.2 + r_tree.uniform(0, 0.1), 0.45 + r_tree.uniform(0, 0.15), 0.15),
                                seed=tex_seed(r_tree)))
        # Lamp poles at the kerb.
        for x in _walk(r_pole, x_lo, x_hi, 18.0, 30.0):
            h = r_pole.uniform(5.0, 7.0)
            cyls.append(dict(center=(x, side * 7.5, h / 2), size=(0.1, 0.1, h / 2), yaw=0.0, velocity=(0, 0, 0),
                             cls=C.POLE, material=M_METAL, color=(0.5, 0.52, 0.55), seed=tex_seed(r_pole)))
        # Parked cars in the parking lane.
        for x in _walk(r_park, x_lo, x_hi, 5.5, 9.0):
            if r_park.random() < 0.7:
                yaw = r_park.uniform(-0.04, 0.04) + (0.0 if r_park.random() < 0.5 else np.pi)
                boxes += _car_rows(r_park, x, side * r_park.uniform(5.0, 5.5), yaw, (0, 0, 0), tex_seed(r_park))
        # Pedestrians walking along the sidewalk (some standing).
        for x in _walk(r_ped, x_lo, x_hi, 6.0, 16.0):
            speed_p = 0.0 if r_ped.random() < 0.2 else r_ped.uniform(0.8, 1.6) * (1 if r_ped.random() < 0.5 else -1)
            h = r_ped.uniform(1.55, 1.9)
            cyls.append(dict(center=(x, side * r_ped.uniform(7.9, 9.6), h / 2), size=(0.24, 0.24, h / 2), yaw=0.0,
                             velocity=(speed_p, 0, 0), cls=C.PEDESTRIAN, material=M_PERSON,
                             color=_CLOTHES[r_ped.integers(len(_CLOTHES))], seed=tex_seed(r_ped)))
    # Oncoming traffic (lane y = +1.75, driving -x), spawned far enough ahead to keep coming.
    for x in _walk(r_on, x_lo, x_hi + 12.0 * duration_s, 22.0, 45.0):
        v = r_on.uniform(6.0, 11.0)
        boxes += _car_rows(r_on, x, LANE_WIDTH / 2, np.pi, (-v, 0, 0), tex_seed(r_on))
    # Same-direction traffic in the ego lane: faster cars ahead, slower cars behind, so ego never
    # catches up with one and none drives into ego.
    for x in _walk(r_ahead, 14.0, x_hi, 30.0, 60.0):
        boxes += _car_rows(r_ahead, x, EGO_LANE_Y, 0.0, (speed + r_ahead.uniform(1.5, 4.0), 0, 0), tex_seed(r_ahead))
    for x in _walk(r_behind, 12.0, 100.0, 25.0, 50.0):
        boxes += _car_rows(r_behind, -x, EGO_LANE_Y, 0.0, (speed - r_behind.uniform(1.5, 4.0), 0, 0),
                           tex_seed(r_behind))
    return World(PrimitiveSet.from_rows(boxes), PrimitiveSet.from_rows(cyls), PrimitiveSet.from_rows(spheres), ego,
                 int(seed), (x_lo, x_hi))
