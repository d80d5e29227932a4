"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy.

Decoding honours ``step`` row padding and ``is_bigendian`` (rosbags-image ignores padding, so it
is not used here). Supported raw encodings are listed in :data:`ENCODINGS`; anything else raises
:class:`ImageEncodingError` naming the encoding. Images come back as owning, native-endian
arrays: ``(H, W)`` for one channel, ``(H, W, C)`` otherwise.

Depth images follow REP 118: ``32FC1`` metres (NaN invalid, +-inf out of range); ``16UC1``
millimetres with 0 = invalid (NaN after :func:`image_to_depth_m`).
"""

from __future__ import annotations

import numpy as np

from mv4d_core.msgs._buffers import as_u8
from mv4d_core.msgs.errors import ImageEncodingError, ImageSizeError, MessageError
from mv4d_core.msgs.factory import MsgFactory, default_factory

#: encoding -> (numpy base dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3), "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4), "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1), "mono16": (np.dtype(np.uint16), 1),
    "rgb16": (np.dtype(np.uint16), 3), "bgr16": (np.dtype(np.uint16), 3),
    "8UC1": (np.dtype(np.uint8), 1), "8UC3": (np.dtype(np.uint8), 3), "8UC4": (np.dtype(np.uint8), 4),
    "16UC1": (np.dtype(np.uint16), 1), "16SC1": (np.dtype(np.int16), 1),
    "32SC1": (np.dtype(np.int32), 1), "32FC1": (np.dtype(np.float32), 1), "64FC1": (np.dtype(np.float64), 1),
}


def _encoding_info(encoding: str) -> tuple[np.dtype, int]:
    try:
        return ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise ImageEncodingError(f"Image.encoding {encoding!r} is not supported "
                                 f"(supported: {sorted(ENCODINGS)})") from None


def image_to_array(msg) -> np.ndarray:
    """Raw ``Image`` -> ``(H, W)`` or ``(H, W, C)`` native-endian array in the message's channel order.

    Raises :class:`ImageEncodingError` (unknown encoding) or :class:`ImageSizeError`
    (``step`` too small, ``data`` length != ``step * height``, negative sizes).
    """
    encoding = msg.encoding
    base, channels = _encoding_info(encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 0 or w < 0 or step < 0:
        raise ImageSizeError(f"Image ({encoding}): negative size height={h} width={w} step={step}")
    row_bytes = w * channels * base.itemsize
    if step < row_bytes:
        raise ImageSizeError(f"Image ({encoding}): step {step} < width*channels*itemsize = {row_bytes}")
    data = as_u8(msg.data, "Image.data")
    if data.size != step * h:
        raise ImageSizeError(f"Image ({encoding}, {w}x{h}): data has {data.size} bytes, expected step*height = "
                             f"{step}*{h} = {step * h}")
    if int(msg.is_bigendian) not in (0, 1):
        raise MessageError(f"Image.is_bigendian must be 0 or 1, got {msg.is_bigendian}")
    order = ">" if int(msg.is_bigendian) else "<"
    rows = data.reshape(h, step)[:, :row_bytes]
    typed = np.ascontiguousarray(rows).view(base.newbyteorder(order)) if row_bytes else np.zeros((h, 0), base)
    out = typed.reshape(h, w, channels).astype(base, copy=True)  # native byte order, owning
    return out[..., 0] if channels == 1 else out


def image_to_rgb(msg) -> np.ndarray:
    """Raw ``Image`` -> ``(H, W, 3)`` uint8 RGB. Colour 8-bit, ``mono8`` (replicated) and 16-bit
    colour/mono (top byte) encodings; depth/float encodings raise :class:`ImageEncodingError`."""
    encoding = msg.encoding
    if encoding in ("32FC1", "64FC1", "16SC1", "32SC1", "16UC1"):
        raise ImageEncodingError(f"Image.encoding {encoding!r} is a depth/scalar encoding, not a colour image")
    a = image_to_array(msg)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    return _to_rgb(a, bgr=encoding.startswith("bgr"))


def _to_rgb(a: np.ndarray, bgr: bool) -> np.ndarray:
    """``(H, W, 3|4)`` uint8 -> contiguous RGB. Channel reversal via per-channel copies: numpy's
    generic copy of a negative-stride channel view is ~40x slower than this."""
    if not bgr and a.shape[2] == 3:
        return a
    out = np.empty(a.shape[:2] + (3,), np.uint8)
    src = (2, 1, 0) if bgr else (0, 1, 2)
    for dst, c in enumerate(src):
        out[..., dst] = a[..., c]
    return out


def image_to_depth_m(msg) -> np.ndarray:
    """Depth ``Image`` -> ``(H, W)`` float32 metres. ``32FC1`` as is; ``16UC1``/``mono16`` are
    millimetres with 0 -> NaN (REP 118)."""
    encoding = msg.encoding
    if encoding in ("32FC1", "64FC1"):
        return image_to_array(msg).astype(np.float32, copy=False)
    if encoding in ("16UC1", "mono16"):
        mm = image_to_array(msg)
        depth = mm.astype(np.float32) / 1000.0
        depth[mm == 0] = np.nan
        return depth
    _encoding_info(encoding)
    raise ImageEncodingError(f"Image.encoding {encoding!r} is not a depth encoding (use 32FC1 or 16UC1)")


def array_to_image(array: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "", *,
                   factory: MsgFactory | None = None, step: int | None = None, bigendian: bool = False):
    """``(H, W)`` / ``(H, W, C)`` array -> ``Image`` with ``encoding`` (data converted to the encoding's
    dtype only when lossless). ``step`` may add row padding (zeros)."""
    factory = factory or default_factory()
    base, channels = _encoding_info(encoding)
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise ImageSizeError(f"array of shape {np.shape(array)} does not fit encoding {encoding!r} "
                             f"({channels} channel(s))")
    if a.dtype != base:
        if not np.can_cast(a.dtype, base, casting="same_kind") or (a.dtype.kind == "f" and base.kind != "f"):
            raise ImageEncodingError(f"array dtype {a.dtype} cannot be stored losslessly as {encoding!r} ({base})")
        a = a.astype(base)
    h, w = a.shape[:2]
    row_bytes = w * channels * base.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageSizeError(f"step {step} < width*channels*itemsize = {row_bytes}")
    wire = base.newbyteorder(">" if bigendian else "<")
    raw = np.ascontiguousarray(a, dtype=wire).view(np.uint8).reshape(h, row_bytes)
    if step != row_bytes:
        padded = np.zeros((h, step), np.uint8)
        padded[:, :row_bytes] = raw
        raw = padded
    return factory.image(factory.header(stamp_ns, frame_id), h, w, encoding, int(bigendian), step, raw.reshape(-1))


def rgb_to_image(rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "", *, factory: MsgFactory | None = None,
                 encoding: str = "rgb8"):
    """``(H, W, 3)`` uint8 RGB -> ``Image`` (``rgb8`` default; ``bgr8``/``mono8`` converted)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageSizeError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if encoding in ("rgb8", "8UC3"):
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[..., ::-1]
    elif encoding == "mono8":
        arr = np.round(rgb @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
    elif encoding in ("rgba8", "bgra8"):
        c = rgb if encoding == "rgba8" else rgb[..., ::-1]
        arr = np.concatenate([c, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    else:
        _encoding_info(encoding)
        raise ImageEncodingError(f"cannot encode an RGB image as {encoding!r}")
    return array_to_image(arr, encoding, stamp_ns, frame_id, factory=factory)


def depth_to_image(depth_m: np.ndarray, stamp_ns: int = 0, frame_id: str = "", *, factory: MsgFactory | None = None,
                   encoding: str = "32FC1"):
    """``(H, W)`` metres -> ``32FC1`` (metres, NaN/inf kept) or ``16UC1`` (mm, non-finite/out of range -> 0)."""
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise ImageSizeError(f"depth must be (H, W), got {d.shape}")
    if encoding == "32FC1":
        return array_to_image(d, "32FC1", stamp_ns, frame_id, factory=factory)
    if encoding == "16UC1":
        mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0)
        mm = np.where(mm > 65535, 0, mm).astype(np.uint16)
        return array_to_image(mm, "16UC1", stamp_ns, frame_id, factory=factory)
    raise ImageEncodingError(f"depth encoding {encoding!r} not supported (32FC1 or 16UC1)")


# ---------------------------------------------------------------------------- CompressedImage
_COMPRESSED_EXT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def _compressed_kind(fmt: str) -> str:
    f = str(fmt).lower()
    if "compresseddepth" in f:
        raise ImageEncodingError(f"CompressedImage.format {fmt!r}: compressedDepth is not supported")
    for kind in ("jpeg", "jpg", "png"):
        if kind in f:
            return kind
    raise ImageEncodingError(f"CompressedImage.format {fmt!r} is not supported (jpeg or png)")


def compressed_to_rgb(msg) -> np.ndarray:
    """``CompressedImage`` (jpeg/png) -> ``(H, W, 3)`` uint8 RGB."""
    import cv2

    _compressed_kind(msg.format)
    buf = as_u8(msg.data, "CompressedImage.data")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise MessageError(f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) could not be decoded")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return _to_rgb(img, bgr=True)  # cv2 decodes to BGR(A)


def rgb_to_compressed(rgb: np.ndarray, stamp_ns: int = 0, frame_id: str = "", *, factory: MsgFactory | None = None,
                      format: str = "jpeg", jpeg_quality: int = 95):  # noqa: A002
    """``(H, W, 3)`` uint8 RGB -> ``CompressedImage`` with the image_transport format string
    ``"rgb8; jpeg compressed bgr8"`` / ``"rgb8; png compressed bgr8"``."""
    import cv2

    factory = factory or default_factory()
    kind = _compressed_kind(format)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageSizeError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if kind in ("jpeg", "jpg") else []
    ok, enc = cv2.imencode(_COMPRESSED_EXT[kind], np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise MessageError(f"cv2 could not encode a {rgb.shape} image as {kind}")
    label = "jpeg" if kind in ("jpeg", "jpg") else "png"
    return factory.compressed_image(factory.header(stamp_ns, frame_id), f"rgb8; {label} compressed bgr8",
                                    enc.reshape(-1))


def any_image_to_rgb(msg) -> np.ndarray:
    """``Image`` or ``CompressedImage`` (told apart by the ``format`` field) -> RGB uint8."""
    return compressed_to_rgb(msg) if hasattr(msg, "format") and not hasattr(msg, "encoding") else image_to_rgb(msg)
