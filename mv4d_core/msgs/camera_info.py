"""``sensor_msgs/CameraInfo`` <-> :class:`PinholeCamera` (+ the optical frame id).

CameraInfo carries no extrinsics; its ``header.frame_id`` is the optical frame whose pose comes
from TF. ``k`` is the row-major 3x3 camera matrix; binning/ROI are not supported (non-default
values raise, rather than silently returning intrinsics for the wrong image).
"""

from __future__ import annotations

import numpy as np

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.msgs.errors import MessageError
from mv4d_core.msgs.factory import MsgFactory, default_factory


def camera_info_to_camera(msg) -> tuple[PinholeCamera, str]:
    """``CameraInfo`` -> ``(PinholeCamera, frame_id)``."""
    frame = str(msg.header.frame_id)
    where = f"CameraInfo(frame_id={frame!r})"
    k = np.asarray(msg.k, dtype=np.float64).ravel()
    if k.size != 9:
        raise MessageError(f"{where}.k: expected 9 values, got {k.size}")
    for field in ("binning_x", "binning_y"):
        if int(getattr(msg, field, 0)) > 1:
            raise MessageError(f"{where}.{field}={getattr(msg, field)}: binning is not supported")
    roi = getattr(msg, "roi", None)
    roi_size = (int(roi.width), int(roi.height)) if roi is not None else (0, 0)
    if all(roi_size) and roi_size != (int(msg.width), int(msg.height)):
        raise MessageError(f"{where}.roi: a region of interest is not supported")
    try:
        d = np.asarray(msg.d, dtype=np.float64).ravel()
        cam = PinholeCamera(k.reshape(3, 3), int(msg.width), int(msg.height), d)
    except ValueError as e:
        raise MessageError(f"{where}: {e}") from None
    return cam, frame


def camera_to_camera_info(camera: PinholeCamera, stamp_ns: int = 0, frame_id: str = "", *,
                          factory: MsgFactory | None = None, distortion_model: str = "plumb_bob"):
    """:class:`PinholeCamera` -> ``CameraInfo`` (``r`` = identity, ``p = [K | 0]``; ``d`` = the
    camera's distortion or 5 zeros for ``plumb_bob``)."""
    factory = factory or default_factory()
    K = np.asarray(camera.K, dtype=np.float64)
    d = np.asarray(camera.distortion, dtype=np.float64).ravel()
    if d.size == 0 and distortion_model == "plumb_bob":
        d = np.zeros(5)
    P = np.concatenate([K, np.zeros((3, 1))], axis=1)
    return factory.camera_info(factory.header(stamp_ns, frame_id), camera.height, camera.width, distortion_model,
                               d, K.ravel(), np.eye(3).ravel(), P.ravel())
