"""Semantic classes: one id per name, a colour per id, and total mappings from nuScenes / Occ3D."""

import numpy as np
import pytest

from mv4d_core.data import classes as C


def test_ids_names_and_palette_line_up():
    assert C.FREE == 0 and C.CLASS_NAMES[C.FREE] == "free"
    for name in ("road", "sidewalk", "building", "vehicle", "pedestrian", "pole", "vegetation", "terrain", "other"):
        assert C.CLASS_NAMES[C.class_id(name)] == name
    assert C.PALETTE.shape == (C.NUM_CLASSES, 3) and C.PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in C.PALETTE}) == C.NUM_CLASSES  # distinguishable in RViz
    assert C.IGNORE >= C.NUM_CLASSES
    with pytest.raises(KeyError, match="classes are"):
        C.class_id("unicorn")


def test_colorize_maps_ids_and_marks_unknown_white():
    rgb = C.colorize(np.array([[C.ROAD, C.IGNORE]], np.uint8))
    assert rgb.shape == (1, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], C.PALETTE[C.ROAD])
    np.testing.assert_array_equal(rgb[0, 1], [255, 255, 255])


def test_occ3d_and_nuscenes_mappings():
    assert len(C.OCC3D_NAMES) == len(C.OCC3D_TO_MV4D) == 18
    named = dict(zip(C.OCC3D_NAMES, C.OCC3D_TO_MV4D))
    assert named["free"] == C.FREE and named["car"] == C.VEHICLE and named["driveable_surface"] == C.ROAD
    assert named["manmade"] == C.BUILDING and named["pedestrian"] == C.PEDESTRIAN
    assert C.nuscenes_category_to_class("vehicle.bus.rigid") == C.VEHICLE
    assert C.nuscenes_category_to_class("human.pedestrian.adult") == C.PEDESTRIAN
    assert C.nuscenes_category_to_class("movable_object.barrier") == C.OTHER
    assert set(C.DYNAMIC_CLASSES) == {C.VEHICLE, C.PEDESTRIAN}
