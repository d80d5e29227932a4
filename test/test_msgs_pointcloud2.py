"""PointCloud2 <-> numpy (mv4d_core.msgs.pointcloud2), against the sensor_msgs_py contract.

Clouds are packed by hand with ``struct`` so the decoder is checked against an independent
byte-level reading; the fuzz test asserts "exactly the struct values, or a PointCloudError".
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mv4d_core.msgs import (MessageError, MsgFactory, PointCloudError, array_to_pointcloud2, create_cloud,
                            create_cloud_xyz32, dtype_from_fields, read_points, read_points_numpy, read_xyz,
                            xyz_to_pointcloud2)
from mv4d_core.msgs.pointcloud2 import FLOAT32, FLOAT64, INT16, UINT8, UINT16, UINT32, Field

F = MsgFactory.rosbags()
STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}


def cloud(fields, data: bytes, width, height=1, point_step=None, row_step=None, big=False, dense=False):
    ps = point_step if point_step is not None else 0
    rs = row_step if row_step is not None else ps * width
    return F.pointcloud2(F.header(1, "lidar"), height, width, [F.point_field(*f) for f in fields], big, ps, rs,
                         np.frombuffer(data, np.uint8), dense)


def test_dtype_from_fields_follows_upstream_rules():
    dt = dtype_from_fields([Field("x", 0, FLOAT32), Field("", 4, UINT8), Field("rgb", 8, UINT16, 3)], point_step=32)
    assert dt.names == ("x", "unnamed_field_1", "rgb_0", "rgb_1", "rgb_2")
    assert [dt.fields[n][1] for n in dt.names] == [0, 4, 8, 10, 12]
    assert dt.itemsize == 32
    with pytest.raises(PointCloudError, match="duplicate"):
        dtype_from_fields([Field("x", 0, FLOAT32), Field("x", 4, FLOAT32)])
    with pytest.raises(PointCloudError, match="count"):
        dtype_from_fields([Field("x", 0, FLOAT32, 0)])
    with pytest.raises(PointCloudError, match="datatype 9"):
        dtype_from_fields([Field("x", 0, 9)])
    with pytest.raises(PointCloudError, match="point_step is 8"):
        dtype_from_fields([Field("x", 0, FLOAT32), Field("y", 4, FLOAT64)], point_step=8)


def test_hand_packed_cloud_with_padding_and_mixed_types():
    # x,y,z float32 | intensity uint8 @12 | ring uint16 @14 | 4 pad bytes -> point_step 20
    fields = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("intensity", 12, UINT8, 1),
              ("ring", 14, UINT16, 1)]
    pts = [(1.5, -2.0, 3.25, 7, 31), (0.0, 1e-3, -4.0, 255, 2)]
    data = b"".join(struct.pack("<fffBxH", *p) + b"\xaa" * 4 for p in pts)
    out = read_points(cloud(fields, data, 2, point_step=20))
    assert out.dtype.itemsize == 20
    for i, p in enumerate(pts):
        assert tuple(out[i]) == pytest.approx(p)
    xyz = read_xyz(cloud(fields, data, 2, point_step=20), ["intensity"])
    assert xyz.xyz.dtype == np.float32 and xyz.xyz.shape == (2, 3)
    np.testing.assert_array_equal(xyz.fields["intensity"], [7, 255])


def test_big_endian_cloud_is_byteswapped_to_host_order():
    fields = [("x", 0, FLOAT32, 1), ("id", 4, UINT32, 1), ("v", 8, INT16, 1)]
    data = struct.pack(">fIh", 2.5, 123456, -300) + b"\0\0" + struct.pack(">fIh", -1.0, 7, 12) + b"\0\0"
    out = read_points(cloud(fields, data, 2, point_step=12, big=True))
    assert all(out.dtype.fields[n][0].isnative for n in out.dtype.names)
    assert out["x"].tolist() == [2.5, -1.0] and out["id"].tolist() == [123456, 7] and out["v"].tolist() == [-300, 12]


def test_skip_nans_selection_and_missing_fields():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0], [4, 5, 6]], np.float32)
    msg = xyz_to_pointcloud2(xyz, factory=F, extra={"intensity": np.array([1, 2, 3], np.float32)})
    assert msg.is_dense is False
    assert read_points(msg, skip_nans=True).shape == (2,)
    assert read_points(msg, ["intensity"], skip_nans=True).shape == (3,)  # NaN only in unselected x
    msg.is_dense = True  # upstream: skip_nans only acts when the cloud is not dense
    assert read_points(msg, skip_nans=True).shape == (3,)
    with pytest.raises(PointCloudError, match="rgb"):
        read_points(msg, ["x", "rgb"])


def test_read_xyz_counts_nonfinite_rows():
    xyz = np.array([[1, 2, 3], [np.nan, 0, 0], [np.inf, 1, 1], [4, 5, -np.inf], [7, 8, 9]], np.float32)
    r = read_xyz(xyz_to_pointcloud2(xyz, factory=F, extra={"t": np.arange(5, dtype=np.float32)}), ["t"])
    assert r.num_nonfinite == 3 and r.num_total == 5
    np.testing.assert_array_equal(r.xyz, xyz[[0, 4]])
    np.testing.assert_array_equal(r.fields["t"], [0, 4])


def test_organized_cloud_with_row_padding_reshapes_row_major():
    h, w = 3, 4
    vals = np.arange(h * w, dtype=np.float32)
    rows = [struct.pack(f"<{w}f", *vals[r * w:(r + 1) * w]) + b"\xff" * 8 for r in range(h)]
    msg = cloud([("x", 0, FLOAT32, 1)], b"".join(rows), w, h, point_step=4, row_step=4 * w + 8)
    flat = read_points(msg)
    np.testing.assert_array_equal(flat["x"], vals)
    grid = read_points(msg, reshape_organized_cloud=True)
    assert grid.shape == (h, w) and grid["x"][1, 2] == 6.0


def test_layout_errors_name_the_field():
    with pytest.raises(PointCloudError, match="row_step\\*height"):
        read_points(cloud([("x", 0, FLOAT32, 1)], b"\0" * 7, 2, point_step=4))
    with pytest.raises(PointCloudError, match="row_step 4 < width"):
        read_points(cloud([("x", 0, FLOAT32, 1)], b"\0" * 8, 2, point_step=4, row_step=4))
    with pytest.raises(PointCloudError, match="point_step is 0"):
        read_points(cloud([("x", 0, FLOAT32, 1)], b"", 2, point_step=0, row_step=0))


def test_read_points_numpy_requires_one_datatype():
    msg = xyz_to_pointcloud2(np.ones((4, 3)), factory=F, extra={"ring": np.ones(4, np.uint16)})
    np.testing.assert_array_equal(read_points_numpy(msg, ["x", "y", "z"]), np.ones((4, 3), np.float32))
    with pytest.raises(PointCloudError, match="one datatype"):
        read_points_numpy(msg)


def test_create_cloud_contract():
    fields = [F.point_field(n, 4 * i, FLOAT32, 1) for i, n in enumerate("xyz")]
    pts = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    msg = create_cloud(F.header(3, "base_link"), fields, pts, factory=F)
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (1, 6, 12, 72, False)
    np.testing.assert_array_equal(read_points_numpy(msg), pts)
    xyz32 = create_cloud_xyz32(F.header(), pts, factory=F)
    assert [(f.name, f.offset, f.datatype) for f in xyz32.fields] == [("x", 0, 7), ("y", 4, 7), ("z", 8, 7)]
    with pytest.raises(PointCloudError, match="does not match"):
        create_cloud(F.header(), fields, np.zeros(2, dtype=[("x", "f8")]), factory=F)
    mixed = fields + [F.point_field("ring", 12, UINT16, 1)]
    with pytest.raises(PointCloudError, match="one datatype"):
        create_cloud(F.header(), mixed, np.zeros((2, 4)), factory=F)
    tuples = create_cloud(F.header(), mixed, [(1, 2, 3, 4), (5, 6, 7, 8)], factory=F)  # slow path; itemsize = end of last field
    assert tuples.point_step == 14 and read_points(tuples)["ring"].tolist() == [4, 8]


def test_structured_round_trip_with_subarrays_and_all_datatypes():
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("a", "i1"), ("b", "u1"), ("c", "<i2"), ("d", "<u2"),
                   ("e", "<i4"), ("f", "<u4"), ("g", "<f8"), ("n", "<f4", (3,))])
    rng = np.random.default_rng(5)
    arr = np.zeros(50, dt)
    for name in dt.names:
        arr[name] = rng.integers(0, 100, arr[name].shape)
    msg = array_to_pointcloud2(arr, 9, "lidar", factory=F)
    assert msg.is_dense is True and msg.point_step == dt.itemsize and msg.row_step == dt.itemsize * 50
    out = read_points(msg)
    for name in ("x", "a", "c", "f", "g"):
        np.testing.assert_array_equal(out[name], arr[name])
    np.testing.assert_array_equal(np.stack([out[f"n_{k}"] for k in range(3)], 1), arr["n"])


def test_xyz_round_trip_is_bit_exact():
    xyz = np.random.default_rng(1).normal(size=(1000, 3)).astype(np.float32)
    msg = xyz_to_pointcloud2(xyz, 1, "lidar", factory=F, extra={"intensity": np.linspace(0, 1, 1000, dtype=np.float32)})
    r = read_xyz(msg, ["intensity"])
    assert r.num_nonfinite == 0
    np.testing.assert_array_equal(r.xyz, xyz)


# --------------------------------------------------------------------------- fuzz
@st.composite
def clouds(draw):
    n_fields = draw(st.integers(1, 4))
    fields, offset = [], 0
    for i in range(n_fields):
        name = draw(st.sampled_from(["x", "y", "z", "intensity", "", "t", "ring"]))
        dtc = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 8, 0, 9]))
        count = draw(st.sampled_from([1, 1, 1, 2, 3, 0]))
        offset += draw(st.integers(0, 3))
        fields.append((name, offset, dtc, count))
        offset += SIZE.get(dtc, 1) * max(count, 1)
    point_step = max(0, offset + draw(st.integers(-2, 6)))
    width, height = draw(st.integers(0, 4)), draw(st.integers(1, 3))
    row_step = max(0, width * point_step + draw(st.sampled_from([0, 0, 3, -1])))
    length = max(0, row_step * height + draw(st.sampled_from([0, 0, 0, 1, -1, -5])))
    data = draw(st.binary(min_size=length, max_size=length))
    big = draw(st.booleans())
    return fields, data, width, height, point_step, row_step, big


def _valid(fields, width, height, point_step, row_step, length):
    names, end = [], 0
    for i, (name, offset, dtc, count) in enumerate(fields):
        if dtc not in STRUCT or count < 1:
            return False
        base = name or f"unnamed_field_{i}"
        subs = [base] if count == 1 else [f"{base}_{k}" for k in range(count)]
        if any(s in names for s in subs):
            return False
        names += subs
        end = max(end, offset + SIZE[dtc] * count)
    if end > point_step and point_step > 0:
        return False
    if width * height == 0:
        return end <= point_step or point_step == 0
    return point_step > 0 and row_step >= width * point_step and length == row_step * height


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clouds())
def test_fuzz_pointcloud2_decoder_is_correct_or_raises_documented_errors(spec):
    fields, data, width, height, point_step, row_step, big = spec
    msg = cloud(fields, data, width, height, point_step, row_step, big)
    try:
        out = read_points(msg)
    except MessageError:
        assert not _valid(fields, width, height, point_step, row_step, len(data)), f"valid cloud rejected: {spec}"
        return
    assert _valid(fields, width, height, point_step, row_step, len(data)), f"invalid cloud accepted: {spec}"
    assert out.shape == (width * height,)
    e = ">" if big else "<"
    for i, (name, offset, dtc, count) in enumerate(fields):
        base = name or f"unnamed_field_{i}"
        for k in range(count):
            col = out[base if count == 1 else f"{base}_{k}"]
            for p in range(width * height):
                r, c = divmod(p, width)
                expect = struct.unpack_from(e + STRUCT[dtc], data, r * row_step + c * point_step + offset + k * SIZE[dtc])[0]
                got = col[p]
                assert (np.isnan(got) and np.isnan(expect)) or got == expect
