"""Message-ready arrays -> ROS messages, for either backend (rclpy in the node, rosbags in ``mv4d infer``).

Point clouds, images and CameraInfo go through ``mv4d_core.msgs``; the OccupancyGrid is built here
by field name through the :class:`MsgFactory`. Output names are relative to the node's
``~/output/`` namespace (``occupancy``, ``points``, ``flow``, ``occupancy_bev``,
``depth/<cam>``, ``depth/<cam>/camera_info``).
"""

from __future__ import annotations

import array
from typing import Sequence

import numpy as np

from mv4d_core.geometry.camera import PinholeCamera
from mv4d_core.msgs import MsgFactory, array_to_pointcloud2, camera_to_camera_info, depth_to_image
from mv4d_core.pipeline.postprocess import BevGrid


def occupancy_grid(bev: BevGrid, stamp_ns: int, frame_id: str, factory: MsgFactory):
    """``nav_msgs/OccupancyGrid`` from :class:`BevGrid` (origin pose = corner of cell (0, 0), no rotation)."""
    f = factory
    x, y, z = bev.origin_xyz
    pose = f.new("geometry_msgs/msg/Pose", position=f.point((x, y, z)), orientation=f.quaternion((0, 0, 0, 1)))
    info = f.new("nav_msgs/msg/MapMetaData", map_load_time=f.time(stamp_ns), resolution=float(bev.resolution),
                 width=int(bev.width), height=int(bev.height), origin=pose)
    cells = np.ascontiguousarray(bev.data, dtype=np.int8)
    if f.backend == "rclpy":
        data = array.array("b")
        data.frombytes(cells.tobytes())
    else:
        data = cells
    return f.new("nav_msgs/msg/OccupancyGrid", header=f.header(stamp_ns, frame_id), info=info, data=data)


def output_messages(arrays, out, stamp_ns: int, base_frame: str, camera_meta: Sequence[tuple[str, int]],
                    factory: MsgFactory) -> list[tuple[str, object]]:
    """``(name, message)`` for every array present in ``arrays`` (:class:`OutputArrays`) of the
    :class:`PerceptionOutputs` ``out``. ``camera_meta``: (optical frame id, image stamp ns) per
    camera, in ``out.camera_names`` order: depth images keep their camera's frame and stamp."""
    f = factory
    msgs: list[tuple[str, object]] = []
    for name in ("occupancy", "points", "flow", "moving"):
        cloud = getattr(arrays, name)
        if cloud is not None:
            msgs.append((name, array_to_pointcloud2(cloud, stamp_ns, base_frame, factory=f)))
    if arrays.bev is not None:
        msgs.append(("occupancy_bev", occupancy_grid(arrays.bev, stamp_ns, base_frame, f)))
    if arrays.depth is not None:
        for i, cam in enumerate(out.camera_names):
            optical, cam_stamp = camera_meta[i]
            depth = arrays.depth[cam]
            h, w = depth.shape
            msgs.append((f"depth/{cam}", depth_to_image(depth, cam_stamp, optical, factory=f)))
            msgs.append((f"depth/{cam}/camera_info",
                         camera_to_camera_info(PinholeCamera(out.depth_intrinsics[i], w, h), cam_stamp, optical,
                                               factory=f)))
    return msgs
