"""Semantic classes of mv4d: ids, names, RGB palette and mappings from nuScenes / Occ3D.

One small label set is shared by the synthetic world (camera semantics, occupancy ground truth),
the evaluation code and the RViz colouring. Id ``0`` (:data:`FREE`) means "no surface": an empty
voxel, or a camera pixel that sees the sky. :data:`IGNORE` (255) marks unknown / unobserved cells.

=====  ===========  ============================================  =====================================
 id    name         Occ3D-nuScenes classes mapped here            nuScenes categories mapped here
=====  ===========  ============================================  =====================================
 0     free         free (17)                                     --
 1     road         driveable_surface (11)                        flat.driveable_surface
 2     sidewalk     sidewalk (13)                                 flat.sidewalk
 3     building     manmade (15)                                  static.manmade
 4     vehicle      car, bus, truck, trailer, construction_veh.,  vehicle.*
                    bicycle, motorcycle (4, 3, 10, 9, 5, 2, 6)
 5     pedestrian   pedestrian (7)                                human.pedestrian.*
 6     pole         -- (Occ3D folds poles into manmade)           --
 7     vegetation   vegetation (16)                               static.vegetation
 8     terrain      terrain (14)                                  flat.terrain
 9     other        others, barrier, traffic_cone, other_flat     movable_object.*, static_object.*,
                    (0, 1, 8, 12)                                 flat.other, animal, static.other
=====  ===========  ============================================  =====================================
"""

from __future__ import annotations

import numpy as np

FREE = 0
ROAD = 1
SIDEWALK = 2
BUILDING = 3
VEHICLE = 4
PEDESTRIAN = 5
POLE = 6
VEGETATION = 7
TERRAIN = 8
OTHER = 9
#: Unknown / not observed (never a real class).
IGNORE = 255

#: Class names indexed by id.
CLASS_NAMES: tuple[str, ...] = ("free", "road", "sidewalk", "building", "vehicle", "pedestrian", "pole",
                                "vegetation", "terrain", "other")
NUM_CLASSES = len(CLASS_NAMES)
#: Ids of classes that can move (used for flow evaluation masks).
DYNAMIC_CLASSES: tuple[int, ...] = (VEHICLE, PEDESTRIAN)

#: ``(NUM_CLASSES, 3)`` uint8 RGB display colours (Cityscapes-like so images read at a glance).
PALETTE = np.array([
    [0, 0, 0],          # free
    [128, 64, 128],     # road
    [244, 35, 232],     # sidewalk
    [70, 70, 70],       # building
    [0, 0, 142],        # vehicle
    [220, 20, 60],      # pedestrian
    [153, 153, 153],    # pole
    [107, 142, 35],     # vegetation
    [152, 251, 152],    # terrain
    [190, 153, 153],    # other
], dtype=np.uint8)

#: Occ3D-nuScenes class index (0..17) -> mv4d id.
OCC3D_NAMES: tuple[str, ...] = ("others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle",
                                "pedestrian", "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat",
                                "sidewalk", "terrain", "manmade", "vegetation", "free")
OCC3D_TO_MV4D = np.array([OTHER, OTHER, VEHICLE, VEHICLE, VEHICLE, VEHICLE, VEHICLE, PEDESTRIAN, OTHER, VEHICLE,
                          VEHICLE, ROAD, OTHER, SIDEWALK, TERRAIN, BUILDING, VEGETATION, FREE], dtype=np.uint8)

_NUSCENES_PREFIXES: tuple[tuple[str, int], ...] = (
    ("vehicle.", VEHICLE),
    ("human.pedestrian", PEDESTRIAN),
    ("flat.driveable_surface", ROAD),
    ("flat.sidewalk", SIDEWALK),
    ("flat.terrain", TERRAIN),
    ("static.manmade", BUILDING),
    ("static.vegetation", VEGETATION),
)


def nuscenes_category_to_class(category: str) -> int:
    """nuScenes category name (``vehicle.car``, ``human.pedestrian.adult`` ...) -> mv4d class id."""
    for prefix, cls in _NUSCENES_PREFIXES:
        if category.startswith(prefix):
            return cls
    return OTHER


def class_id(name: str) -> int:
    """Class name -> id; raises ``KeyError`` naming the valid names."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown class {name!r}; classes are {CLASS_NAMES}") from None


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids ``(...)`` -> RGB ``(..., 3)`` uint8 with :data:`PALETTE` (ids out of range -> white)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape + (3,), 255, dtype=np.uint8)
    ok = labels < NUM_CLASSES
    out[ok] = PALETTE[labels[ok]]
    return out
