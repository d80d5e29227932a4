"""Voxel grids: Occ3D default, tiny CPU grid, index <-> metric round trips, outside points."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mv4d_core.geometry.voxel_grid import OCC3D, TINY, VoxelGridSpec


def test_presets_match_occ3d_and_tiny():
    assert OCC3D.shape == (200, 200, 16)
    assert OCC3D.range_min == (-40.0, -40.0, -1.0) and OCC3D.range_max == (40.0, 40.0, 5.4)
    assert TINY.shape == (100, 100, 8)
    assert OCC3D.num_voxels == 640_000


def test_first_voxel_centre_and_last_voxel():
    np.testing.assert_allclose(OCC3D.index_to_metric([0, 0, 0]), [-39.8, -39.8, -0.8])
    np.testing.assert_allclose(OCC3D.index_to_metric([199, 199, 15]), [39.8, 39.8, 5.2])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 199), st.integers(0, 199), st.integers(0, 15))
def test_index_metric_round_trip(i, j, k):
    c = OCC3D.index_to_metric([i, j, k])
    np.testing.assert_allclose(OCC3D.metric_to_index(c), [i, j, k], atol=1e-9)
    idx, inside = OCC3D.points_to_voxels(c[None])
    assert inside[0] and tuple(idx[0]) == (i, j, k)


def test_points_outside_or_nan_are_flagged():
    pts = np.array([[0, 0, 0], [40.0, 0, 0], [0, 0, -1.01], [np.nan, 0, 0], [np.inf, 0, 0]])
    idx, inside = OCC3D.points_to_voxels(pts)
    assert inside.tolist() == [True, False, False, False, False]
    assert (idx[~inside] == -1).all()


def test_normalized_coordinates_span_grid_faces():
    np.testing.assert_allclose(TINY.normalized(np.array([-40.0, -40.0, -1.0])), [-1, -1, -1])
    np.testing.assert_allclose(TINY.normalized(np.array([40.0, 40.0, 5.4])), [1, 1, 1])


def test_centers_grid_shape():
    c = TINY.centers()
    assert c.shape == (100, 100, 8, 3)
    np.testing.assert_allclose(c[3, 4, 5], TINY.index_to_metric([3, 4, 5]))


def test_invalid_specs_name_the_problem():
    with pytest.raises(ValueError, match="whole number"):
        VoxelGridSpec((0, 0, 0), (1, 1, 1), (0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match="positive"):
        VoxelGridSpec((0, 0, 0), (1, 1, 1), (0, 1, 1))
    with pytest.raises(ValueError, match="exceed"):
        VoxelGridSpec((0, 0, 0), (0, 1, 1), (1, 1, 1))
    assert VoxelGridSpec.from_dict(TINY.to_dict()) == TINY
    assert VoxelGridSpec.from_dict({"range_min": [0, 0, 0], "range_max": [2, 2, 2], "voxel_size": 0.5}).shape == (4, 4, 4)
