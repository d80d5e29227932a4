"""Image / CompressedImage / CameraInfo / stamp conversions (mv4d_core.msgs), rosbags backend.

Spec: decoders honour ``step`` padding and ``is_bigendian``, return owning native arrays, and
either return exactly the pixels an independent per-element ``struct`` reading gives, or raise a
documented ``MessageError`` subclass (never another exception).
"""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.msgs import (ENCODINGS, ImageEncodingError, ImageSizeError, MessageError, MsgFactory, array_to_image,
                            camera_info_to_camera, camera_to_camera_info, compressed_to_rgb, depth_to_image,
                            image_to_array, image_to_depth_m, image_to_rgb, ns_to_sec_nanosec, rgb_to_compressed,
                            rgb_to_image, stamp_to_ns)

F = MsgFactory.rosbags()
STRUCT = {"uint8": "B", "uint16": "H", "int16": "h", "int32": "i", "float32": "f", "float64": "d"}


def raw_image(encoding, h, w, step, data: bytes, big=0):
    return F.image(F.header(5, "cam"), h, w, encoding, big, step, np.frombuffer(data, np.uint8))


def reference_decode(encoding, h, w, step, data: bytes, big) -> np.ndarray:
    """Independent per-element reading with struct (slow, small images only)."""
    base, c = ENCODINGS[encoding]
    code = ("<>"[big]) + STRUCT[base.name]
    out = np.zeros((h, w, c), dtype=base)
    for r in range(h):
        for x in range(w):
            for k in range(c):
                out[r, x, k] = struct.unpack_from(code, data, r * step + (x * c + k) * base.itemsize)[0]
    return out[..., 0] if c == 1 else out


def test_mv4d_core_never_imports_rclpy():
    code = ("import sys, mv4d_core.msgs, mv4d_core.data.rosbag_io, mv4d_core.data.approx_sync, "
            "mv4d_core.data.info_command; assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big", [False, True])
def test_every_encoding_round_trips_with_padding_and_endianness(encoding, pad, big):
    base, c = ENCODINGS[encoding]
    rng = np.random.default_rng(1)
    shape = (3, 4) if c == 1 else (3, 4, c)
    a = (rng.random(shape) * 100).astype(base)
    step = 4 * c * base.itemsize + pad
    msg = array_to_image(a, encoding, 7, "cam", factory=F, step=step, bigendian=big)
    assert msg.step == step and msg.is_bigendian == int(big) and len(msg.data) == step * 3
    out = image_to_array(msg)
    assert out.dtype == base and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    np.testing.assert_array_equal(out, reference_decode(encoding, 3, 4, step, bytes(msg.data), int(big)))


def test_big_endian_16uc1_built_by_hand():
    data = struct.pack(">4H", 1, 256, 4000, 65535)
    out = image_to_array(raw_image("16UC1", 2, 2, 4, data, big=1))
    np.testing.assert_array_equal(out, [[1, 256], [4000, 65535]])
    np.testing.assert_allclose(image_to_depth_m(raw_image("16UC1", 2, 2, 4, data, big=1)),
                               [[0.001, 0.256], [4.0, 65.535]], rtol=1e-6)


def test_row_padding_bytes_are_ignored():
    # 2x2 rgb8 with step 8 (2 garbage bytes per row)
    data = bytes([1, 2, 3, 4, 5, 6, 99, 99, 7, 8, 9, 10, 11, 12, 77, 77])
    out = image_to_array(raw_image("rgb8", 2, 2, 8, data))
    np.testing.assert_array_equal(out.reshape(-1), np.arange(1, 13))


def test_rgb_conversions_from_each_colour_encoding():
    rgb = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(rgb_to_image(rgb, factory=F)), rgb)
    bgr = rgb_to_image(rgb, encoding="bgr8", factory=F)
    assert np.array_equal(image_to_array(bgr), rgb[..., ::-1])
    assert np.array_equal(image_to_rgb(bgr), rgb)
    for enc in ("rgba8", "bgra8"):
        assert np.array_equal(image_to_rgb(rgb_to_image(rgb, encoding=enc, factory=F)), rgb)
    mono = image_to_rgb(array_to_image(rgb[..., 0], "mono8", factory=F))
    assert np.array_equal(mono, np.repeat(rgb[..., :1], 3, axis=2))
    m16 = image_to_rgb(array_to_image(rgb[..., 0].astype(np.uint16) << 8, "mono16", factory=F))
    assert np.array_equal(m16[..., 0], rgb[..., 0])


def test_depth_images_keep_metres_nan_and_inf():
    d = np.array([[1.5, np.nan], [np.inf, 0.25]], np.float32)
    msg = depth_to_image(d, 9, "cam", factory=F)
    assert msg.encoding == "32FC1" and msg.step == 2 * 4 and msg.is_bigendian == 0
    np.testing.assert_array_equal(image_to_depth_m(msg), d)
    mm = depth_to_image(d, factory=F, encoding="16UC1")
    out = image_to_depth_m(mm)
    assert np.isnan(out[0, 1]) and np.isnan(out[1, 0]) and out[0, 0] == pytest.approx(1.5)
    with pytest.raises(ImageEncodingError, match="32FC1"):
        image_to_rgb(msg)


def test_unknown_encoding_names_it():
    with pytest.raises(ImageEncodingError, match="bayer_rggb8"):
        image_to_array(raw_image("bayer_rggb8", 1, 1, 1, b"\0"))
    with pytest.raises(ImageEncodingError, match="yuv422"):
        image_to_rgb(raw_image("yuv422", 1, 1, 2, b"\0\0"))


def test_size_mismatches_are_clear_errors():
    with pytest.raises(ImageSizeError, match="expected step\\*height"):
        image_to_array(raw_image("rgb8", 2, 2, 6, b"\0" * 11))
    with pytest.raises(ImageSizeError, match="step 5 <"):
        image_to_array(raw_image("rgb8", 2, 2, 5, b"\0" * 10))
    with pytest.raises(ImageSizeError, match="3 channel"):
        array_to_image(np.zeros((2, 2), np.uint8), "rgb8", factory=F)
    with pytest.raises(ImageEncodingError, match="losslessly"):
        array_to_image(np.zeros((2, 2), np.float32), "mono8", factory=F)


def test_compressed_png_is_lossless_and_jpeg_close():
    rng = np.random.default_rng(3)
    rgb = np.clip(rng.normal(128, 20, (32, 40, 3)), 0, 255).astype(np.uint8)
    png = rgb_to_compressed(rgb, 11, "cam", format="png", factory=F)
    assert png.format == "rgb8; png compressed bgr8"
    assert np.array_equal(compressed_to_rgb(png), rgb)
    yy, xx = np.mgrid[0:32, 0:40]
    smooth = np.stack([xx * 6, yy * 7, 255 - xx * 3], -1).astype(np.uint8)  # JPEG is near-lossless on smooth content
    jpg = rgb_to_compressed(smooth, format="jpeg", factory=F, jpeg_quality=98)
    assert jpg.format == "rgb8; jpeg compressed bgr8"
    assert np.abs(compressed_to_rgb(jpg).astype(int) - smooth).mean() < 3
    # channel order: a pure red image stays red (RGB, not BGR)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    assert np.array_equal(compressed_to_rgb(rgb_to_compressed(red, format="png", factory=F)), red)


def test_compressed_errors():
    with pytest.raises(MessageError, match="could not be decoded"):
        compressed_to_rgb(F.compressed_image(F.header(), "jpeg", np.frombuffer(b"not a jpeg", np.uint8)))
    with pytest.raises(ImageEncodingError, match="webp"):
        compressed_to_rgb(F.compressed_image(F.header(), "webp", np.zeros(4, np.uint8)))
    with pytest.raises(ImageEncodingError, match="compressedDepth"):
        compressed_to_rgb(F.compressed_image(F.header(), "16UC1; compressedDepth png", np.zeros(4, np.uint8)))


def test_camera_info_round_trip_and_errors():
    cam = PinholeCamera(np.array([[400.0, 0, 319.5], [0, 410.0, 239.5], [0, 0, 1]]), 640, 480)
    msg = camera_to_camera_info(cam, 123, "CAM_FRONT", factory=F)
    assert list(msg.p[:3]) == [400.0, 0, 319.5] and list(msg.r) == list(np.eye(3).ravel())
    back, frame = camera_info_to_camera(msg)
    assert frame == "CAM_FRONT" and (back.width, back.height) == (640, 480)
    np.testing.assert_array_equal(back.K, cam.K)
    bad = camera_to_camera_info(cam, factory=F)
    bad.k = np.zeros(9)
    with pytest.raises(MessageError, match="CameraInfo"):
        camera_info_to_camera(bad)


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_700_000_000_123_456_789, -1, -1_500_000_000])
def test_stamps_round_trip(ns):
    t = F.time(ns)
    assert 0 <= t.nanosec < 1_000_000_000
    assert stamp_to_ns(t) == ns
    assert ns_to_sec_nanosec(ns) == (t.sec, t.nanosec)


def test_stamp_with_bad_nanosec_is_rejected():
    t = F.time(0)
    t.nanosec = 1_000_000_000
    with pytest.raises(MessageError, match="nanosec"):
        stamp_to_ns(t)


# --------------------------------------------------------------------------- fuzz
ENC_CHOICES = sorted(ENCODINGS) + ["bayer_rggb8", "", "RGB8", "yuv422", "jpeg"]


@st.composite
def image_messages(draw):
    enc = draw(st.sampled_from(ENC_CHOICES))
    h, w = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    base, c = ENCODINGS.get(enc, (np.dtype(np.uint8), 1))
    row = w * c * base.itemsize
    step = max(0, row + draw(st.integers(-3, 5)))
    length = max(0, step * h + draw(st.sampled_from([0, 0, 0, -1, 1, -7, 13])))
    data = draw(st.binary(min_size=length, max_size=length))
    big = draw(st.sampled_from([0, 1, 0, 2]))
    return enc, h, w, step, data, big


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image_messages())
def test_fuzz_image_decoder_is_correct_or_raises_documented_errors(spec):
    enc, h, w, step, data, big = spec
    msg = raw_image(enc, h, w, step, data, big)
    try:
        out = image_to_array(msg)
    except MessageError:
        base, c = ENCODINGS.get(enc, (np.dtype(np.uint8), 1))
        valid = enc in ENCODINGS and step >= w * c * base.itemsize and len(data) == step * h and big in (0, 1)
        assert not valid, f"valid message rejected: {spec}"
        return
    assert enc in ENCODINGS and big in (0, 1)
    expected = reference_decode(enc, h, w, step, data, big)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)  # NaN positions compare equal
    if enc in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "rgb16", "bgr16", "8UC3", "8UC4", "8UC1"):
        assert image_to_rgb(msg).shape == (h, w, 3)
